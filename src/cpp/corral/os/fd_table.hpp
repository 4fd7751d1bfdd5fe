// The kernel's table of this process's file descriptors. Bottom area: no corral types here.
#pragma once

namespace corral::os {

// Makes the fd table hold `more` descriptors beyond the lowest free one, in one growth.
// The kernel grows the table by doubling as descriptors are opened, and in a process with
// more than one thread each growth waits for an RCU grace period (synchronize_rcu in
// expand_fdtable): milliseconds each, on the thread that opened the descriptor. A start of
// 100 services grew it three times (64 -> 512 slots) and spent 10-15 ms blocked in them, a
// quarter of the whole start; one growth sized for the request waits once. Never touches an
// open descriptor; does nothing past RLIMIT_NOFILE or once the table is big enough.
void reserve_fd_slots(int more) noexcept;

}  // namespace corral::os
