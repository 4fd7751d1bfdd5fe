// The public Stack handle: every method posts to the engine thread (Impl::call) or reads
// the stack's event queue; none touches service state from the caller's thread.
#include <sys/syscall.h>
#include <unistd.h>

#include <fmt/format.h>

#include "corral/engine/engine_impl.hpp"
#include "corral/metrics/proc_sample.hpp"

namespace corral {

Stack::Stack(std::shared_ptr<Engine> engine, std::shared_ptr<StackState> state)
    : engine_(std::move(engine)), state_(std::move(state)) {}

// Does not wait: the thread that drops the last handle (Python's garbage collector, say)
// must not block for a stop_timeout. The close goes on in the engine, which keeps the
// stack's state alive until it is done; engine shutdown kills whatever is still running.
Stack::~Stack() {
  if (!engine_->impl().alive) return;
  try {
    close();
  } catch (...) {
    // The engine went away underneath us; its shutdown killed everything.
  }
}

const std::string& Stack::name() const noexcept { return state_->spec.name; }

std::vector<std::string> Stack::service_names() const {
  std::vector<std::string> out;
  for (const auto& s : state_->spec.services) out.push_back(s.name);
  return out;
}

std::vector<std::vector<std::string>> Stack::levels() const {
  std::vector<std::vector<std::string>> out;
  for (const auto& level : state_->graph.levels()) {
    out.emplace_back();
    for (auto i : level) out.back().push_back(state_->spec.services[i].name);
  }
  return out;
}

std::vector<Dependency> Stack::dependencies(const std::string& name) const {
  for (const auto& s : state_->spec.services)
    if (s.name == name) return s.depends_on;
  throw Error(fmt::format("stack '{}' has no service '{}'", state_->spec.name, name));
}

std::shared_ptr<Pending<Outcome>> Stack::start(const std::vector<std::string>& names) {
  auto result = std::make_shared<Pending<Outcome>>();
  engine_->impl().call([&] { engine_->impl().request_start(*state_, names, result); });
  return result;
}

std::shared_ptr<Pending<Outcome>> Stack::stop(const std::vector<std::string>& names) {
  auto result = std::make_shared<Pending<Outcome>>();
  engine_->impl().call([&] { engine_->impl().request_stop(*state_, names, result); });
  return result;
}

std::shared_ptr<Pending<Outcome>> Stack::wait_state(const std::string& name, State state) {
  auto result = std::make_shared<Pending<Outcome>>();
  engine_->impl().call([&] {
    auto& st = *state_;
    Svc& s = st.at(name);
    if (st.closed) return result->set(Outcome{false, name, "the stack was closed"});
    auto w = std::make_shared<Waiter>();
    w->result = result;
    w->good = [state](const Svc& x) { return x.state == state; };
    w->bad = [state](const Svc& x) -> std::optional<Outcome> {
      if (x.state != state && is_settled(x.state) && !x.want_up)
        return Outcome{false, x.spec.name,
                       fmt::format("is {}{}{}", to_string(x.state), x.reason.empty() ? "" : ": ", x.reason)};
      return std::nullopt;
    };
    engine_->impl().add_waiter(st, w, {s.index});
  });
  return result;
}

std::shared_ptr<Pending<Outcome>> Stack::wait_log(const std::string& name, const std::string& regex,
                                                  std::uint64_t from_seq) {
  Pattern re = Pattern::compile(regex);  // ConfigError when not valid
  auto result = std::make_shared<Pending<Outcome>>();
  engine_->impl().call([&] {
    auto& st = *state_;
    Svc& s = st.at(name);
    for (const auto& line : s.logs.lines()) {
      Match m = line.seq >= from_seq ? re.search(line.text) : Match::not_found;
      if (m == Match::found) return result->set(Outcome{true, name, line.text});
      if (m == Match::too_costly) return result->set(Outcome{false, name, re.too_costly_message(line.text.size())});
    }
    // No service named: the edge tells "stack closed" from a failure of this wait.
    if (st.closed) return result->set(Outcome{false, "", "the stack was closed"});
    // Waits whose callers gave up (a timeout) go now, so they cannot pile up on a quiet
    // service that never prints the line that would have pruned them.
    std::erase_if(s.log_waiters, [](const LogWaiter& w) { return w.result.expired(); });
    s.log_waiters.push_back({std::move(re), from_seq, result});
  });
  return result;
}

namespace {
// From the snapshot the engine publishes: no round trip to the engine thread.
ServiceStatus row_of(const StackState& st, std::size_t i) {
  ServiceStatus r;
  {
    std::lock_guard lock(st.status_mutex);
    r = st.status_snapshot[i];
  }
  r.log_lines = st.log_counters[i][0].load(std::memory_order_relaxed);
  r.log_dropped = st.log_counters[i][1].load(std::memory_order_relaxed);
  return r;
}
}  // namespace

std::vector<ServiceStatus> Stack::status() {
  std::vector<ServiceStatus> out;
  {
    // One copy under one lock: the engine publishes a row per change, and taking the lock
    // once per row made a whole-stack read meet it up to N times.
    std::lock_guard lock(state_->status_mutex);
    out = state_->status_snapshot;
  }
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i].log_lines = state_->log_counters[i][0].load(std::memory_order_relaxed);
    out[i].log_dropped = state_->log_counters[i][1].load(std::memory_order_relaxed);
  }
  return out;
}

ServiceStatus Stack::status(const std::string& name) {
  auto it = state_->index.find(name);
  if (it == state_->index.end()) throw Error(fmt::format("stack '{}' has no service '{}'", state_->spec.name, name));
  return row_of(*state_, it->second);
}

std::vector<LogLine> Stack::logs(const std::string& name, long tail) {
  return engine_->impl().call([&] { return state_->at(name).logs.tail(tail); });
}

bool Stack::signal(const std::string& name, int sig) {
  return engine_->impl().call([&] {
    Svc& s = state_->at(name);
    if (!s.proc.full() || !s.proc.pidfd) return false;
    // Through the pidfd: never a bare pid that might have been recycled.
    return ::syscall(SYS_pidfd_send_signal, s.proc.pidfd->native_handle(), sig, nullptr, 0) == 0;
  });
}

std::vector<ProcessSample> Stack::sample() {
  // A running service's processes were all created since its start request: with the
  // oldest pid clock of the running ones, only newer pids need reading.
  std::optional<procfs::PidClock> since;
  bool bounded = true;
  auto groups = engine_->impl().call([&] {
    std::vector<std::pair<std::string, pid_t>> out;
    for (const auto& s : state_->services) {
      out.emplace_back(s->spec.name, s->proc.pid);
      if (!s->proc.full()) continue;
      if (!s->sweep_since) bounded = false;
      else if (!since || s->sweep_since->forks < since->forks) since = s->sweep_since;
    }
    return out;
  });
  std::optional<std::pair<pid_t, pid_t>> range;
  if (bounded && since) range = procfs::pids_since(*since);
  return sample_groups(groups, range);
}

void Stack::subscribe(bool lossless) { state_->events.subscribe(lossless); }

std::vector<EngineEvent> Stack::events(double timeout, std::size_t max) {
  return to_events(take_events(timeout, max));
}

EventChunk Stack::take_events(double timeout, std::size_t max) {
  auto& q = state_->events;
  if (!q.reader_subscribed() && !q.subscribe(false)) return {};
  bool resume = false;
  auto out = q.take(timeout, max, resume);
  if (resume && engine_->impl().alive) {
    auto st = state_;
    Engine::Impl* impl = &engine_->impl();
    asio::post(impl->io, [impl, st] { impl->resume_reads(*st); });
  }
  return out;
}

std::uint64_t Stack::add_listener(std::function<void(const EngineEvent&)> f) {
  return state_->events.add_tap(std::move(f));
}

void Stack::remove_listener(std::uint64_t id) { state_->events.remove_tap(id); }

std::shared_ptr<Pending<Outcome>> Stack::close() {
  auto done = std::make_shared<Pending<Outcome>>();
  auto st = state_;
  Engine::Impl* impl = &engine_->impl();
  impl->call([&] { impl->request_close(st, done); });
  return done;
}

}  // namespace corral
