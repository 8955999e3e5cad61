module github.com/blauth/blauth/e2e/gosdk

go 1.26.0

require (
	github.com/blauth/blauth v0.0.0
	github.com/blauth/blauth/clients/go v0.0.0
	github.com/blaxel-ai/sdk-go v0.26.4
)

require (
	github.com/tidwall/gjson v1.19.0 // indirect
	github.com/tidwall/match v1.2.0 // indirect
	github.com/tidwall/pretty v1.2.1 // indirect
	github.com/tidwall/sjson v1.2.5 // indirect
	golang.org/x/oauth2 v0.38.0 // indirect
	golang.org/x/sync v0.22.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)

replace (
	github.com/blauth/blauth => ../..
	github.com/blauth/blauth/clients/go => ../../clients/go
)
