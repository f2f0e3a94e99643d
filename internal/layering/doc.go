// Package layering holds the test that keeps the module's import graph
// the one docs/design.md draws: a package imports only packages of its
// own layer or below.
package layering
