package device

import "unsafe"

// unsafeString views b as a string without copying. The result must not
// outlive b's next modification; callers use it only while building a
// record from a datagram still in the receive buffer.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
