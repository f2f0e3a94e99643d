// Package mount is watchq's mount topology and superblock source: the
// watch_mount(2) and watch_sb(2) system calls David Howells and Gabriel
// Krisman Bertazi posted in 2019–2020 and mainline never merged, built
// from what kernels expose instead.
//
//   - Mounts attached, detached and moved come from fanotify mount events
//     (FAN_MNT_ATTACH/FAN_MNT_DETACH on the mount namespace, Linux 6.15),
//     with statmount(2) for the details; on older kernels from
//     /proc/self/mountinfo change notification (poll(2) POLLPRI) and a
//     diff.
//   - Mount attribute changes (read-only and the others) and superblocks
//     going read-only come from rereading mountinfo on that notification,
//     with either backend.
//   - Filesystem errors come from fanotify FAN_FS_ERROR (Linux 5.16).
//
// A [Source] reports one mount namespace: the calling thread's when it is
// opened, or the one Config.Namespace names. [Source.WatchMount] is
// watch_mount(AT_FDCWD, path, 0, queue, tag): the watch sees what happens
// to the mounts at and below the directory (notifications propagate
// rootwards, as in the patches). [Source.WatchSuperblock] is
// watch_sb(AT_FDCWD, path, 0, queue, tag). Records are laid out as the
// patches laid them out (record.MountNotification,
// record.SuperblockNotification); docs/records.md and docs/mounts.md say
// what is posted when, and what each backend cannot see.
package mount
