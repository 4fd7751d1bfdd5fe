// The per-user runtime directory (port claims, stack tmpdirs, the pytest plugin's run
// files) and the private directories and files inside it.
//
// A fixed name in a world-writable place (/tmp/corral-<uid>) can be created first by anyone
// else on the machine: as a symlink to a directory of the victim's (corral then writes
// there), or as a directory of their own (they read what we put there, and plant what we
// read). So the directory is never used on trust: it is created 0700, then opened without
// following a symlink, and used only if we own it; a mode that lets others in is narrowed
// (it is ours), anything else is refused with an error that names the path.
//
// Bottom area: no corral types here. Errors are std::runtime_error.
#pragma once

#include <string>

namespace corral::os {

// The directory, secured (see above), in this order:
//   $CORRAL_RUNTIME_DIR when set (created if missing);
//   $XDG_RUNTIME_DIR/corral when XDG_RUNTIME_DIR is set, exists, is ours and 0700;
//   $TMPDIR/corral-<uid> (TMPDIR absolute), else /tmp/corral-<uid>.
// Throws std::runtime_error when the chosen path is a symlink, not a directory, owned by
// another user, or cannot be created.
std::string runtime_dir();

// Creates `path` with mode 0700 if missing, then checks it as described above: a real
// directory (not a symlink), owned by our effective uid, its mode narrowed to 0700.
// Returns `path`. Only the last component is checked: call it for each level below a
// directory that is itself secured.
std::string private_dir(const std::string& path);

// Opens a file inside a private directory, never through a symlink (O_NOFOLLOW, O_CLOEXEC
// added to `flags`; O_CREAT files get mode 0600). Returns the fd, or -1 with errno set.
int open_private(const std::string& path, int flags);

}  // namespace corral::os
