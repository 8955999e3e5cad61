// Package reliability holds blauth's reliability suite; run it with make reliability.
//
// The suite drives the real blauthd and blauth-helper binaries against a fake Blaxel API under
// load, faults and attack. Its tests carry the reliability build tag; docs/RELIABILITY.md
// describes each case and how to run one.
package reliability
