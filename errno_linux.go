package watchq

import "syscall"

// ebadslt is the errno remove_watch_from_object returns for a missing watch.
const ebadslt = syscall.EBADSLT
