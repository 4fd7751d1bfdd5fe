// pidfd helpers. Bottom area: no corral types here.
#pragma once

namespace corral::os {

// PIDFD_SIGNAL_PROCESS_GROUP (Linux 6.9 uapi; older headers lack it): pidfd_send_signal
// then signals every member of the group the pidfd's process leads. The kernel finds the
// group through the pid itself, not its number, so the signal reaches that group even after
// its leader has been reaped, and never another program's group that reuses the number.
inline constexpr unsigned pidfd_process_group = 1U << 2;

// Whether this kernel knows pidfd_process_group (asked once, then remembered).
bool pidfd_signals_groups() noexcept;

}  // namespace corral::os
