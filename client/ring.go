package client

// DefaultRingPages is the data area CreateRingQueue asks for when given
// 0 pages: 64 KiB, some 2700 24-byte records.
const DefaultRingPages = 16
