// Package sources reads Blaxel credentials from the environment, .env files, the bl CLI config and the
// OS keyring, watches them, and resolves which one wins, with provenance.
//
// The file formats it accepts, and the rules it applies to their ambiguous cases, are described in
// docs/SOURCES-FORMATS.md.
package sources
