package dotenv

import (
	"testing"

	"github.com/blauth/blauth/sources"
)

// benchDotenv is a project .env as people write them: comments, export prefixes, quotes, an
// inline comment, blank lines, and the Blaxel variables among others.
const benchDotenv = `# Project settings
export NODE_ENV=development
APP_NAME="my agent"
APP_PORT=8080 # the dev server
DATABASE_URL='postgres://app:app@localhost:5432/app?sslmode=disable'

# Blaxel
BL_WORKSPACE=acme-prod
BL_API_KEY="bl_aaaabbbbccccddddeeeeffff00001111"
BL_ENV=prod

OPENAI_API_KEY=sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
LOG_LEVEL=debug
FEATURE_FLAGS="a,b,c"
MULTILINE="line one\nline two"
EMPTY=
`

func BenchmarkParseDotenv(b *testing.B) {
	data := []byte(benchDotenv)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		vars, errs := Parse(data)
		if len(errs) != 0 || vars[sources.VarAPIKey] == "" {
			b.Fatalf("parse: %v %v", vars, errs)
		}
	}
}
