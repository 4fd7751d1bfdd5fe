// What the owner tells its death watcher (engine/watcher.hpp): SOCK_SEQPACKET messages,
// each a run of records. A message never exceeds max_message bytes nor carries more than
// max_fds pidfds (SCM_RIGHTS), one per watch_group record, in record order.
#pragma once

#include <cstddef>

namespace corral::watch_protocol {

constexpr char watch_group = 'g';        // + 4-byte pgid, and its leader's pidfd
constexpr char watch_group_bare = 'G';   // + 4-byte pgid, no pidfd could be opened
constexpr char unwatch_group = 'u';      // + 4-byte pgid
constexpr char watch_stack = 's';        // + 1-byte length + the stack id
constexpr char unwatch_stack = 'x';      // + 1-byte length + the stack id

constexpr std::size_t max_message = 4096;
constexpr int max_fds = 64;
constexpr std::size_t max_id = 255;  // longer stack ids are not swept for (see watcher.cpp)

}  // namespace corral::watch_protocol
