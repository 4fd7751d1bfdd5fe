// Log capture and the event stream: pipes are read when readable (never polled), cut into
// lines, kept in the service's ring, and published to the stack's event queue; each line
// goes out before whatever it causes (a LogCheck's readiness), so a reader sees "server
// started" before "[corral] ready".
#include <unistd.h>

#include <cerrno>

#include "corral/engine/engine_impl.hpp"

namespace corral {

void Engine::Impl::publish_state(StackState& st, Svc& s, std::string detail) {
  if (!st.events.subscribed()) return;
  EngineEvent e;
  e.kind = EngineEvent::Kind::state;
  e.service = s.spec.name;
  e.state = s.state;
  e.time_ns = wall_ns();
  e.exit_code = s.exit_code;
  // A failure and a liveness failure say why (the reason the status row shows too).
  e.text = s.state == State::failed || s.state == State::unhealthy ? s.reason : std::move(detail);
  st.events.push(std::move(e));
}

void Engine::Impl::record_line(StackState& st, Svc& s, Stream stream, std::string_view text, std::int64_t now) {
  if (now == 0) now = wall_ns();
  const LogLine& line = s.logs.push(now, stream, text);
  if (s.log_file) {
    s.log_file->add(now, stream, text);
    if (!draining) flush_log_file(st, s);
  }
  st.metrics->on_log_line(s.index, stream == Stream::out ? 0 : 1, text.size());
  st.log_counters[s.index][0].store(s.logs.next_seq(), std::memory_order_relaxed);
  st.log_counters[s.index][1].store(s.logs.dropped(), std::memory_order_relaxed);
  if (st.events.subscribed()) st.events.push_log(s.spec.name, stream, line.text, now);
  if (!s.log_waiters.empty()) {
    for (std::size_t i = 0; i < s.log_waiters.size();) {
      auto& w = s.log_waiters[i];
      auto result = w.result.lock();
      Match m = result && line.seq >= w.from ? w.re.search(line.text) : Match::not_found;
      if (m == Match::found) result->set(Outcome{true, s.spec.name, line.text});
      if (m == Match::too_costly) result->set(Outcome{false, s.spec.name, w.re.too_costly_message(line.text.size())});
      bool hit = m != Match::not_found;
      if (!result || hit) {
        s.log_waiters[i] = std::move(s.log_waiters.back());
        s.log_waiters.pop_back();
      } else {
        ++i;
      }
    }
  }
  Match ready = s.ready_regex && s.state == State::starting ? s.ready_regex->search(line.text) : Match::not_found;
  if (ready == Match::found) {
    s.ready_regex.reset();
    dispatch(st, s, Event::ready);
  } else if (ready == Match::too_costly) {
    // The pattern hit the step limit: it can no longer be trusted to see the line the user
    // waits for, so readiness fails now, saying why, instead of at the deadline.
    std::string why = s.ready_regex->too_costly_message(line.text.size());
    s.ready_regex.reset();
    dispatch(st, s, Event::deadline, why);
  }
}

// One write per read of the pipe. The first failure (disk full, a removed directory) is
// said once in the service's own log; the file is then left alone.
void Engine::Impl::flush_log_file(StackState& st, Svc& s) {
  if (s.log_file->flush()) return;
  std::string why = s.log_file->error();
  s.log_file.reset();
  if (!why.empty()) record_line(st, s, Stream::err, "corral: " + why);
}

void Engine::Impl::arm_read(StackState& st, Svc& s, Stream which) {
  auto& d = which == Stream::out ? s.proc.out : s.proc.err;
  if (!d) return;
  // A lossless reader is behind: leave the pipe unread, so the service blocks on its own
  // writes, until the reader has caught up (resume_reads).
  if (st.events.over_budget()) {
    st.paused_reads.emplace_back(s.index, which, s.generation);
    return;
  }
  auto self = st.shared_from_this();
  unsigned gen = s.generation;
  d->async_wait(Descriptor::wait_read, [this, self, &s, which, gen](const boost::system::error_code& ec) {
    if (ec || s.generation != gen) return;
    if (drain(*self, s, which, 16)) arm_read(*self, s, which);
  });
}

void Engine::Impl::resume_reads(StackState& st) {
  auto paused = std::move(st.paused_reads);
  st.paused_reads.clear();
  for (auto [i, which, gen] : paused) {
    Svc& s = *st.services[i];
    if (s.generation == gen) arm_read(st, s, which);
  }
}

// Reads what is there (at most `rounds` buffers, for fairness between chatty services).
// Returns false at end of stream, after closing it.
bool Engine::Impl::drain(StackState& st, Svc& s, Stream which, int rounds) {
  auto& d = which == Stream::out ? s.proc.out : s.proc.err;
  auto& split = which == Stream::out ? s.proc.out_split : s.proc.err_split;
  while (d && rounds-- > 0) {
    ssize_t n = ::read(d->native_handle(), read_buf.data(), read_buf.size());
    if (n > 0) {
      const std::int64_t now = wall_ns();
      EventQueue::Batch one_publish(st.events);  // the read's lines under one lock
      draining = true;
      split.feed(std::string_view(read_buf.data(), static_cast<std::size_t>(n)),
                 [&](std::string_view line) { record_line(st, s, which, line, now); });
      draining = false;
      if (s.log_file) flush_log_file(st, s);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    split.finish([&](std::string_view line) { record_line(st, s, which, line); });
    closer.close(d);
    return false;
  }
  return static_cast<bool>(d);
}

// At the exit: take what is still in the pipes now, so the last lines are there for
// whoever looks at the exit; then hand them to the closer (a grandchild holding the write
// end was just killed with the group).
void Engine::Impl::close_pipes(StackState& st, Svc& s) {
  drain(st, s, Stream::out, 64);
  drain(st, s, Stream::err, 64);
  closer.close(s.proc.out);
  closer.close(s.proc.err);
  const std::int64_t now = wall_ns();
  s.proc.out_split.finish([&](std::string_view line) { record_line(st, s, Stream::out, line, now); });
  s.proc.err_split.finish([&](std::string_view line) { record_line(st, s, Stream::err, line, now); });
}

}  // namespace corral
