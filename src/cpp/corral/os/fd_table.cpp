#include "corral/os/fd_table.hpp"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>

namespace corral::os {

namespace {
// The largest table asked for so far: the kernel never shrinks one.
std::atomic<long> reserved{0};
}  // namespace

void reserve_fd_slots(int more) noexcept {
  // open() takes the lowest free slot: every descriptor to come goes at or above it.
  int probe = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (probe < 0) return;
  long want = static_cast<long>(probe) + more;
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY && want >= static_cast<long>(lim.rlim_cur))
    want = static_cast<long>(lim.rlim_cur) - 1;
  if (want > reserved.load(std::memory_order_relaxed)) {
    // A descriptor at `want` or above grows the table to hold it: F_DUPFD takes the lowest
    // free one there, so nothing open is replaced.
    int high = ::fcntl(probe, F_DUPFD_CLOEXEC, static_cast<int>(want));
    if (high >= 0) {
      ::close(high);
      reserved.store(want, std::memory_order_relaxed);
    }
  }
  ::close(probe);
}

}  // namespace corral::os
