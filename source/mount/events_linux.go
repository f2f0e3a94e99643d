//go:build linux

package mount

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/record"
	"golang.org/x/sys/unix"
)

// fanotify event layout (include/uapi/linux/fanotify.h): struct
// fanotify_event_metadata, then info records each starting with struct
// fanotify_event_info_header {u8 info_type; u8 pad; u16 len}.
const (
	fanMetadataVersion = 3 // FANOTIFY_METADATA_VERSION
	infoMntIDOffset    = 8 // struct fanotify_event_info_mnt: __u64 mnt_id after the 4-byte header and padding
	infoErrorOffset    = 4 // struct fanotify_event_info_error: __s32 error, __u32 error_count
	infoFSIDOffset     = 4 // struct fanotify_event_info_fid: __kernel_fsid_t fsid
)

// fanEvent is one decoded fanotify event.
type fanEvent struct {
	mask       uint64
	mntID      uint64
	hasMnt     bool
	errno      int32
	errCount   uint32
	hasErr     bool
	fsid       [2]int32
	hasFSID    bool
	eventBytes int
}

// parseFanEvents calls f for each whole event in b.
func parseFanEvents(b []byte, f func(fanEvent)) {
	le := binary.NativeEndian
	for len(b) >= unix.FAN_EVENT_METADATA_LEN {
		n := int(le.Uint32(b))
		mlen := int(le.Uint16(b[6:]))
		if n < unix.FAN_EVENT_METADATA_LEN || n > len(b) || mlen < unix.FAN_EVENT_METADATA_LEN || mlen > n || b[4] != fanMetadataVersion {
			return
		}
		ev := fanEvent{mask: le.Uint64(b[8:]), eventBytes: n}
		if fd := int32(le.Uint32(b[16:])); fd >= 0 {
			unix.Close(int(fd)) // not asked for; never leak one
		}
		for info := b[mlen:n]; len(info) >= 4; {
			l := int(le.Uint16(info[2:]))
			if l < 4 || l > len(info) {
				break
			}
			r := info[:l]
			switch info[0] {
			case unix.FAN_EVENT_INFO_TYPE_MNT:
				if l >= infoMntIDOffset+8 {
					ev.mntID, ev.hasMnt = le.Uint64(r[infoMntIDOffset:]), true
				}
			case unix.FAN_EVENT_INFO_TYPE_ERROR:
				if l >= infoErrorOffset+8 {
					ev.errno, ev.errCount, ev.hasErr = int32(le.Uint32(r[infoErrorOffset:])), le.Uint32(r[infoErrorOffset+4:]), true
				}
			case unix.FAN_EVENT_INFO_TYPE_FID, unix.FAN_EVENT_INFO_TYPE_DFID, unix.FAN_EVENT_INFO_TYPE_DFID_NAME:
				if l >= infoFSIDOffset+8 {
					ev.fsid = [2]int32{int32(le.Uint32(r[infoFSIDOffset:])), int32(le.Uint32(r[infoFSIDOffset+4:]))}
					ev.hasFSID = true
				}
			}
			info = info[l:]
		}
		f(ev)
		b = b[n:]
	}
}

// readMountEvents drains the mount event group; it returns the number
// of events.
func (w *worker) readMountEvents() int {
	total := 0
	for {
		n, err := unix.Read(w.fan, w.evbuf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return total
		}
		parseFanEvents(w.evbuf[:n], func(ev fanEvent) {
			total++
			w.s.stats.events.Add(1)
			w.mountEvent(ev)
		})
	}
}

// mountEvent applies one fanotify mount event. The mount's details are
// read now (statmount), so they are its state when the event is read,
// not when it happened.
func (w *worker) mountEvent(ev fanEvent) {
	if ev.mask&unix.FAN_Q_OVERFLOW != 0 {
		w.overflow()
		return
	}
	if !ev.hasMnt {
		return
	}
	id := ev.mntID
	switch ev.mask & (unix.FAN_MNT_ATTACH | unix.FAN_MNT_DETACH) {
	case unix.FAN_MNT_ATTACH:
		si, err := w.sm.statmount(id)
		if err != nil {
			w.t.attachUnknown(id)
			return
		}
		w.t.attach(entryFrom(si))
	case unix.FAN_MNT_DETACH:
		w.t.detach(id)
	case unix.FAN_MNT_ATTACH | unix.FAN_MNT_DETACH: // moved
		si, err := w.sm.statmount(id)
		switch {
		case err != nil && w.t.live(id) != nil:
			w.t.move(id, 0, w.t.live(id).mountPoint) // gone since: new place unknown
		case err != nil:
			w.t.attachUnknown(id)
		case w.t.live(id) == nil:
			w.t.attach(entryFrom(si))
		default:
			w.t.move(id, si.ParentID, si.MountPoint)
		}
	}
}

// overflow handles a full fanotify queue: every mount watch is told of
// the loss in-band, then the table is brought up to date from listmount,
// with the records that difference implies.
func (w *worker) overflow() {
	w.s.stats.overflows.Add(1)
	for _, wl := range w.t.watches {
		wl.PostLoss(1)
	}
	ids, err := listmount()
	if err != nil {
		return
	}
	now := make(map[uint64]bool, len(ids))
	for _, id := range ids {
		now[id] = true
	}
	var gone []*entry
	for id, e := range w.t.mounts {
		if !e.gone && !now[id] {
			gone = append(gone, e)
		}
	}
	sort.Slice(gone, func(i, j int) bool { return len(gone[i].mountPoint) < len(gone[j].mountPoint) })
	for _, e := range gone {
		w.t.detach(e.id)
	}
	for _, id := range ids {
		if w.t.live(id) == nil {
			if si, err := w.sm.statmount(id); err == nil {
				w.t.attach(entryFrom(si))
			}
		}
	}
}

// readErrors drains the FAN_FS_ERROR group.
func (w *worker) readErrors() {
	for {
		n, err := unix.Read(w.errfd, w.evbuf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return
		}
		parseFanEvents(w.evbuf[:n], func(ev fanEvent) {
			w.s.stats.events.Add(1)
			if ev.mask&unix.FAN_Q_OVERFLOW != 0 {
				for _, sw := range w.t.sbs {
					sw.wl.PostLoss(1)
				}
				return
			}
			if ev.mask&unix.FAN_FS_ERROR == 0 || !ev.hasErr || !ev.hasFSID {
				return
			}
			dev, ok := w.fsids[ev.fsid]
			if !ok {
				return
			}
			errno := ev.errno
			if errno < 0 {
				errno = -errno
			}
			w.t.fsError(dev, uint32(errno), ev.errCount)
		})
	}
}

// scanAttrs rereads mountinfo for attribute changes of known mounts (the
// fanotify backend: topology comes from fanotify).
func (w *worker) scanAttrs() {
	w.deferred = false
	w.lastScan = time.Now()
	defer func() { w.scanCost = time.Since(w.lastScan) }()
	b, err := w.readMountinfoRaw()
	if err != nil {
		return
	}
	_ = scanMountinfo(b, func(l *rawMountinfo) {
		e := w.t.byOld[l.id]
		if e == nil || e.dev != record.KernelDev(l.major, l.minor) || !l.mountPointIs(e.mountPoint) {
			return // not known yet, or the 32-bit id was reused
		}
		w.t.setAttr(e.id, l.attr())
		w.t.setSBReadonly(e.dev, l.sbReadonly())
	})
}

// scanFallback is one pass of the mountinfo backend: reread mountinfo and
// post what changed since the last pass: unmounts (top down, as the
// kernel's umount_tree detaches a tree), moves
// (top down), new mounts (in mountinfo order, parents first), then
// attribute changes.
func (w *worker) scanFallback() {
	w.deferred = false
	w.lastScan = time.Now()
	if err := w.readMountinfo(); err != nil {
		return
	}
	w.s.stats.events.Add(1)
	lines := w.miLines
	byOld := make(map[uint32]*mountInfo, len(lines))
	for i := range lines {
		byOld[lines[i].ID] = &lines[i]
	}
	// Identify each line's mount: by unique id where listmount works, so a
	// reused 32-bit id is a new mount; else by the 32-bit id and device.
	ident := make(map[uint32]uint64, len(lines)) // line id → mount id
	var fresh []*mountInfo
	if w.unique {
		ids, err := listmount()
		if err != nil {
			return
		}
		present := make(map[uint64]bool, len(ids))
		for _, id := range ids {
			present[id] = true
			if e := w.t.live(id); e != nil {
				if l := byOld[e.oldID]; l != nil {
					ident[l.ID] = id
				}
				continue
			}
			si, err := w.sm.statmount(id)
			if err != nil {
				continue
			}
			if l := byOld[si.OldID]; l != nil {
				ident[l.ID] = id
				fresh = append(fresh, l)
			}
		}
	} else {
		for i := range lines {
			l := &lines[i]
			if e := w.t.byOld[l.ID]; e != nil && e.dev == record.KernelDev(l.Major, l.Minor) {
				ident[l.ID] = e.id
			} else {
				ident[l.ID] = uint64(l.ID)
				fresh = append(fresh, l)
			}
		}
	}
	seen := make(map[uint64]bool, len(ident))
	for _, id := range ident {
		seen[id] = true
	}
	var gone []*entry
	for id, e := range w.t.mounts {
		if !e.gone && !seen[id] {
			gone = append(gone, e)
		}
	}
	sort.Slice(gone, func(i, j int) bool {
		if len(gone[i].mountPoint) != len(gone[j].mountPoint) {
			return len(gone[i].mountPoint) < len(gone[j].mountPoint)
		}
		return gone[i].id < gone[j].id
	})
	for _, e := range gone {
		w.t.detach(e.id)
	}
	isFresh := make(map[uint32]bool, len(fresh))
	for _, l := range fresh {
		isFresh[l.ID] = true
	}
	// Moves, top down, so a moved mount's subtree has moved along by the
	// time its members are compared.
	var known []*mountInfo
	for i := range lines {
		if _, ok := ident[lines[i].ID]; ok && !isFresh[lines[i].ID] {
			known = append(known, &lines[i])
		}
	}
	sort.SliceStable(known, func(i, j int) bool { return len(known[i].MountPoint) < len(known[j].MountPoint) })
	for _, l := range known {
		e := w.t.live(ident[l.ID])
		if e == nil {
			continue
		}
		parent, ok := ident[l.Parent]
		if !ok { // the namespace root's parent is outside it
			parent = e.parent
		}
		if parent != e.parent || l.MountPoint != e.mountPoint {
			w.t.move(e.id, parent, l.MountPoint)
		}
	}
	for _, l := range lines {
		if !isFresh[l.ID] {
			continue
		}
		e := entryFromLine(&l)
		e.id = ident[l.ID]
		e.parent = ident[l.Parent]
		if e.parent == 0 {
			e.parent = uint64(l.Parent)
		}
		w.t.attach(e)
	}
	for _, l := range known {
		if e := w.t.live(ident[l.ID]); e != nil {
			w.t.setAttr(e.id, l.Attr)
			w.t.setSBReadonly(e.dev, l.SBReadonly)
		}
	}
}

// resolve finds directory path in the namespace: its canonical form, its
// statx and the live mount it is on.
func (w *worker) resolve(path string) (string, unix.Statx_t, *entry, error) {
	w.pass(false) // the mount may be newer than the last event read
	var st unix.Statx_t
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", st, nil, err
	}
	if err := unix.Statx(unix.AT_FDCWD, real, 0, unix.STATX_MNT_ID_UNIQUE|unix.STATX_TYPE|unix.STATX_MODE|unix.STATX_UID|unix.STATX_GID, &st); err != nil {
		return "", st, nil, &os.PathError{Op: "statx", Path: real, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return "", st, nil, &os.PathError{Op: "watch", Path: real, Err: unix.ENOTDIR}
	}
	if err := unix.Faccessat(unix.AT_FDCWD, real, unix.X_OK, unix.AT_EACCESS); err != nil {
		return "", st, nil, &os.PathError{Op: "watch", Path: real, Err: err}
	}
	var e *entry
	if st.Mask&unix.STATX_MNT_ID_UNIQUE != 0 {
		e = w.t.live(st.Mnt_id)
	} else {
		e = w.t.byOld[uint32(st.Mnt_id)]
	}
	if e == nil {
		return "", st, nil, &os.PathError{Op: "watch", Path: real, Err: fmt.Errorf("mount %#x is not in the watched namespace: %w", st.Mnt_id, unix.ENOENT)}
	}
	return real, st, e, nil
}

// watchMode maps a directory's search bits to the policy's Mode bits.
func watchMode(mode uint16) uint32 {
	var m uint32
	if mode&0o100 != 0 {
		m |= 0o400
	}
	if mode&0o10 != 0 {
		m |= 0o40
	}
	if mode&0o1 != 0 {
		m |= 0o4
	}
	if m == 0 {
		m = 0o1000 // nobody but root
	}
	return m
}

func (w *worker) watchMount(q *watchq.Queue, path string, tag record.Tag, watcher *watchq.Cred) error {
	real, st, e, err := w.resolve(path)
	if err != nil {
		return fmt.Errorf("mount: watch %s: %w", path, err)
	}
	k := watchKey{real, e.id}
	wl := w.t.watches[k]
	fresh := wl == nil
	if fresh {
		wl = w.s.eng.NewWatchList(watchq.Object{Kind: watchq.KindMount, ID: ObjectID(e.id), UID: st.Uid, GID: st.Gid, Mode: watchMode(st.Mode)})
	}
	if err := wl.Add(q, ObjectID(e.id), tag, watcher); err != nil {
		return fmt.Errorf("mount: watch %s: %w", real, err)
	}
	if fresh {
		w.t.watches[k] = wl
	}
	return nil
}

func (w *worker) unwatchMount(q *watchq.Queue, path string) error {
	real, _, e, err := w.resolve(path)
	if err != nil {
		return fmt.Errorf("mount: unwatch %s: %w", path, err)
	}
	k := watchKey{real, e.id}
	wl := w.t.watches[k]
	if wl == nil {
		return fmt.Errorf("mount: unwatch %s: %w", real, watchq.ErrNoWatch)
	}
	if err := wl.Remove(q, ObjectID(e.id)); err != nil {
		return fmt.Errorf("mount: unwatch %s: %w", real, err)
	}
	if wl.Len() == 0 {
		delete(w.t.watches, k)
	}
	return nil
}

func (w *worker) watchSB(q *watchq.Queue, path string, tag record.Tag, watcher *watchq.Cred) error {
	real, st, e, err := w.resolve(path)
	if err != nil {
		return fmt.Errorf("mount: watch superblock of %s: %w", path, err)
	}
	sw := w.t.sbs[e.dev]
	fresh := sw == nil
	if fresh {
		sw = &sbWatch{dev: e.dev, wl: w.s.eng.NewWatchList(watchq.Object{Kind: watchq.KindSuperblock, ID: record.ObjectID(e.dev), UID: st.Uid, GID: st.Gid, Mode: watchMode(st.Mode)})}
	}
	if err := sw.wl.Add(q, record.ObjectID(e.dev), tag, watcher); err != nil {
		return fmt.Errorf("mount: watch superblock of %s: %w", real, err)
	}
	if fresh {
		w.t.sbs[e.dev] = sw
	}
	if sw.markPath != "" {
		return nil
	}
	if w.errfd < 0 {
		return fmt.Errorf("%w: %v", ErrNoFSErrors, w.s.caps.FSErrors)
	}
	if err := unix.FanotifyMark(w.errfd, unix.FAN_MARK_ADD|unix.FAN_MARK_FILESYSTEM, unix.FAN_FS_ERROR, unix.AT_FDCWD, real); err != nil {
		return fmt.Errorf("%w: fanotify_mark(FAN_MARK_FILESYSTEM, FAN_FS_ERROR) on %s: %w", ErrNoFSErrors, real, err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(real, &sfs); err != nil {
		return fmt.Errorf("%w: statfs %s: %w", ErrNoFSErrors, real, err)
	}
	sw.markPath, sw.fsid = real, [2]int32{sfs.Fsid.Val[0], sfs.Fsid.Val[1]}
	w.fsids[sw.fsid] = e.dev
	return nil
}

func (w *worker) unwatchSB(q *watchq.Queue, path string) error {
	real, _, e, err := w.resolve(path)
	if err != nil {
		return fmt.Errorf("mount: unwatch superblock of %s: %w", path, err)
	}
	sw := w.t.sbs[e.dev]
	if sw == nil {
		return fmt.Errorf("mount: unwatch superblock of %s: %w", real, watchq.ErrNoWatch)
	}
	if err := sw.wl.Remove(q, record.ObjectID(e.dev)); err != nil {
		return fmt.Errorf("mount: unwatch superblock of %s: %w", real, err)
	}
	if sw.wl.Len() == 0 {
		delete(w.t.sbs, e.dev)
		w.unmarkSB(sw)
	}
	return nil
}

// unmarkSB removes a superblock's FAN_FS_ERROR mark. When the superblock
// is gone the kernel has dropped the mark already and this fails
// harmlessly.
func (w *worker) unmarkSB(sw *sbWatch) {
	if sw.markPath == "" || w.errfd < 0 {
		return
	}
	delete(w.fsids, sw.fsid)
	_ = unix.FanotifyMark(w.errfd, unix.FAN_MARK_REMOVE|unix.FAN_MARK_FILESYSTEM, unix.FAN_FS_ERROR, unix.AT_FDCWD, sw.markPath)
	sw.markPath = ""
}
