// Command hello prints a greeting; the extras guest test runs it as
// /sbin/watchq-hello to prove -gobin / "gobin" installs work.
package main

import "fmt"

func main() { fmt.Println("hello from a static Go program") }
