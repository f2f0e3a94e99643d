// Package blockerr reports block-layer I/O errors from the kernel's
// block:block_rq_error tracepoint (or block:block_rq_complete with a
// non-zero error where the former is missing) through an eBPF program
// written with cilium/ebpf's assembler, so building needs no clang.
//
// The program copies dev, sector and error out of each tracepoint record
// into a BPF ring buffer; when the ring is full it counts the drop in an
// array map. Field offsets are read at run time from the tracepoint's
// format file in tracefs, since the layout has changed across kernels.
package blockerr

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/watchq/watchq/record"
)

// Field is one field of a tracepoint record, from a format file line such
// as "field:dev_t dev;	offset:8;	size:4;	signed:0;".
type Field struct {
	Name   string
	Type   string // C declaration without the name, e.g. "dev_t"
	Offset int
	Size   int
	Signed bool
}

// Format is a parsed tracefs format file (kernel/trace/trace_events.c
// f_show).
type Format struct {
	Name   string
	ID     int
	Fields map[string]Field
}

// ParseFormat parses a tracefs events/<group>/<name>/format file.
func ParseFormat(r io.Reader) (*Format, error) {
	f := &Format{Fields: make(map[string]Field)}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "name:"):
			f.Name = strings.TrimSpace(strings.TrimPrefix(line, "name:"))
		case strings.HasPrefix(line, "ID:"):
			id, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "ID:")))
			if err != nil {
				return nil, fmt.Errorf("tracepoint format: bad ID line %q: %w", line, err)
			}
			f.ID = id
		case strings.HasPrefix(line, "field:"):
			fld, err := parseField(line)
			if err != nil {
				return nil, err
			}
			f.Fields[fld.Name] = fld
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tracepoint format: %w", err)
	}
	if len(f.Fields) == 0 {
		return nil, fmt.Errorf("tracepoint format %q: no fields", f.Name)
	}
	return f, nil
}

func parseField(line string) (Field, error) {
	var fld Field
	seen := 0
	for part := range strings.SplitSeq(line, ";") {
		part = strings.TrimSpace(part)
		k, v, ok := strings.Cut(part, ":")
		if !ok {
			continue
		}
		var err error
		switch k {
		case "field":
			decl := strings.TrimSpace(v)
			// "char rwbs[10]" names rwbs; "__data_loc char[] cmd" names cmd.
			if i := strings.IndexByte(decl, '['); i >= 0 && !strings.Contains(decl[i:], " ") {
				decl = decl[:i]
			}
			i := strings.LastIndexAny(decl, " *")
			if i < 0 {
				return fld, fmt.Errorf("tracepoint format: no field name in %q", line)
			}
			fld.Name, fld.Type = decl[i+1:], strings.TrimSpace(decl[:i+1])
			seen++
		case "offset":
			fld.Offset, err = strconv.Atoi(v)
			seen++
		case "size":
			fld.Size, err = strconv.Atoi(v)
			seen++
		case "signed":
			fld.Signed = v == "1"
		}
		if err != nil {
			return fld, fmt.Errorf("tracepoint format: bad %s in %q: %w", k, line, err)
		}
	}
	if seen != 3 || fld.Name == "" {
		return fld, fmt.Errorf("tracepoint format: incomplete field line %q", line)
	}
	return fld, nil
}

// Layout is where the program finds what it copies in a tracepoint record.
type Layout struct {
	Dev, Sector, Error Field
}

// Layout checks that f has the fields the program needs, with sizes it
// can load (dev 4 bytes, sector 4 or 8, error 4), and returns them.
func (f *Format) Layout() (Layout, error) {
	var l Layout
	for _, want := range []struct {
		name  string
		sizes []int
		dst   *Field
	}{
		{"dev", []int{4}, &l.Dev},
		{"sector", []int{4, 8}, &l.Sector},
		{"error", []int{4}, &l.Error},
	} {
		fld, ok := f.Fields[want.name]
		if !ok {
			return l, fmt.Errorf("tracepoint %s has no %q field", f.Name, want.name)
		}
		okSize := false
		for _, s := range want.sizes {
			okSize = okSize || fld.Size == s
		}
		if !okSize || fld.Offset < 0 || fld.Offset%fld.Size != 0 || fld.Offset > 0x7fff {
			return l, fmt.Errorf("tracepoint %s: field %q has size %d at offset %d, which the program cannot load", f.Name, want.name, fld.Size, fld.Offset)
		}
		*want.dst = fld
	}
	return l, nil
}

// Subtype maps an errno from the tracepoint's error field (negative, as
// blk_status_to_errno returns it, or positive) to the seed's block error
// subtype, following the kernel's blk_errors[] table in block/blk-core.c:
// ETIMEDOUT→TIMEOUT, ENOSPC→NO_SPACE, ENOLINK→RECOVERABLE_TRANSPORT,
// EREMOTEIO→CRITICAL_TARGET, EBADE→CRITICAL_NEXUS, ENODATA→CRITICAL_MEDIUM,
// EILSEQ→PROTECTION, ENOMEM→KERNEL_RESOURCE, EBUSY→DEVICE_RESOURCE,
// EIO→IO. Statuses the seed has no subtype for (EOPNOTSUPP, EAGAIN,
// ENODEV, ETIME, EINVAL and the zoned-device ones) map to IO, the seed's
// catch-all, and known is false.
func Subtype(errno int32) (subtype uint8, known bool) {
	if errno < 0 {
		errno = -errno
	}
	switch errno {
	case errETIMEDOUT:
		return record.BlockErrorTimeout, true
	case errENOSPC:
		return record.BlockErrorNoSpace, true
	case errENOLINK:
		return record.BlockErrorRecoverableTransport, true
	case errEREMOTEIO:
		return record.BlockErrorCriticalTarget, true
	case errEBADE:
		return record.BlockErrorCriticalNexus, true
	case errENODATA:
		return record.BlockErrorCriticalMedium, true
	case errEILSEQ:
		return record.BlockErrorProtection, true
	case errENOMEM:
		return record.BlockErrorKernelResource, true
	case errEBUSY:
		return record.BlockErrorDeviceResource, true
	case errEIO:
		return record.BlockErrorIO, true
	}
	return record.BlockErrorIO, false
}
