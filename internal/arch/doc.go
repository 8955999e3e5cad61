// Package arch holds no code: its tests enforce the module's shape, as docs/ARCHITECTURE.md
// draws it. Each product package may import only the packages its rule lists (so arrows point
// one way: sources → resolver → broker → server → ipc ← helper), no product package imports a
// test harness, and no function outside the parsers grows past 80 lines.
package arch
