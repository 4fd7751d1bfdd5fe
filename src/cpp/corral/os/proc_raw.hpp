// /proc readers that are async-signal-safe: raw syscalls into static buffers, no malloc, no
// stdio. For code that runs in a fork of a multi-threaded process (the death watcher when
// it is not exec'd), where only such calls are allowed until exec or _exit.
//
// Bottom area: no corral types here. Not thread-safe (static buffers).
#pragma once

#include <sys/types.h>

#include <cstddef>

namespace corral::os {

// The value of variable `name` ("CORRAL_STACK") in /proc/<pid>/environ, copied into `out`
// (NUL-terminated). Returns its length, or -1 when the process is gone, unreadable (another
// user's), a zombie, has no such variable, or the value does not fit in `cap - 1` bytes.
// Reads the environment whole, in chunks, so a large environment hides nothing.
int environ_value(pid_t pid, const char* name, char* out, std::size_t cap) noexcept;

// Calls visit(pid) for every process in /proc (getdents64, no opendir). Returns false when
// /proc cannot be read.
bool for_each_process(void (*visit)(pid_t pid, void* ctx), void* ctx) noexcept;

// The process group of `pid` (from /proc/<pid>/stat), or -1 when it is gone or unreadable.
pid_t process_group(pid_t pid) noexcept;

}  // namespace corral::os
