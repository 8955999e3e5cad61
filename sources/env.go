package sources

import "strings"

// Variables read from environments and .env files.
const (
	VarWorkspace         = "BL_WORKSPACE"
	VarAPIKey            = "BL_API_KEY"
	VarClientCredentials = "BL_CLIENT_CREDENTIALS"
	VarEnv               = "BL_ENV"
	VarAPIURL            = "BL_API_URL"
)

// EnvVars returns the BL_* variables of environ (as os.Environ gives them).
func EnvVars(environ []string) map[string]string {
	m := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "BL_") {
			m[k] = v
		}
	}
	return m
}
