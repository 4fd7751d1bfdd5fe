#include "corral/os/pidfd.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace corral::os {

bool pidfd_signals_groups() noexcept {
  static const bool known = [] {
    int self = static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0U));
    if (self < 0) return false;
    // Signal 0 sends nothing. ESRCH: the flag is known and we lead no group; EINVAL: an
    // older kernel.
    long rc = ::syscall(SYS_pidfd_send_signal, self, 0, nullptr, pidfd_process_group);
    bool ok = rc == 0 || errno == ESRCH;
    ::close(self);
    return ok;
  }();
  return known;
}

}  // namespace corral::os
