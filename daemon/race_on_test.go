//go:build race

package daemon_test

// raceEnabled is set when the tests (and so the daemon they run as a
// child) are built with the race detector, whose shadow memory is never
// given back: RSS cannot then be compared with a baseline.
const raceEnabled = true
