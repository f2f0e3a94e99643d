// Package extras holds the vmtest harness's acceptance test for extra guest
// files: its vmtest.files puts a dynamically linked host binary (with the
// libraries ldd names), a plain file and a static Go program into the guest,
// and the test checks them together with the package's testdata.
package extras
