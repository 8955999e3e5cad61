module github.com/blauth/blauth

go 1.26.0

toolchain go1.27.3

require (
	github.com/adrg/xdg v0.5.3
	github.com/fsnotify/fsnotify v1.10.1
	github.com/rs/zerolog v1.35.1
	github.com/zalando/go-keyring v0.2.8
	go.yaml.in/yaml/v3 v3.0.6
	golang.org/x/oauth2 v0.38.0
	golang.org/x/sys v0.50.0
)

require (
	github.com/danieljoos/wincred v1.2.3 // indirect
	github.com/godbus/dbus/v5 v5.2.2 // indirect
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
)

// The Go client is a module of its own (clients/go); e2e/clients and reliability use it from
// this checkout.
require github.com/blauth/blauth/clients/go v0.0.0

replace github.com/blauth/blauth/clients/go => ./clients/go
