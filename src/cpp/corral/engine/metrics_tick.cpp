// The engine's side of metrics: a timer per stack (only when its interval is above 0) that
// lists the running services and hands the reading of /proc to the sampler thread, so a
// stack of hundreds of services never stalls the engine; and the Stack methods that read
// what the sampler and the counters hold. The counters themselves are bumped by one-line
// hooks where things happen (actions.cpp, capture.cpp, check_runner.cpp).
#include <time.h>

#include <fmt/format.h>

#include "corral/engine/engine_impl.hpp"
#include "corral/metrics/prometheus.hpp"

namespace corral {

namespace {

double thread_cpu_seconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

double mono_seconds() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }

// One tick: read every target's tree, turn the readings into samples. Any thread; the
// sampler state's mutex makes ticks of one stack take turns.
void run_tick(StackMetrics& metrics, SamplerState& sampler, const std::vector<SampleTarget>& targets, bool pss) {
  std::lock_guard lock(sampler.mutex);
  double cpu0 = thread_cpu_seconds();
  sampler.tree.set_pss(pss);
  auto readings = sampler.tree.sample(targets);
  metrics.add_readings(readings, wall_now(), mono_seconds());
  metrics.add_tick_cost(thread_cpu_seconds() - cpu0, sampler.tree.processes_read());
}

}  // namespace

std::vector<SampleTarget> Engine::Impl::sample_targets(StackState& st) {
  std::vector<SampleTarget> out;
  for (const auto& s : st.services)
    if (s->proc.full()) out.push_back(SampleTarget{s->index, s->proc.pid, s->sweep_since});
  return out;
}

void Engine::Impl::arm_metrics(const std::shared_ptr<StackState>& st) {
  if (st->metrics_interval <= 0 || st->closed) return;
  if (!st->metrics_timer) st->metrics_timer = std::make_unique<asio::steady_timer>(io);
  st->metrics_timer->expires_after(to_duration(st->metrics_interval));
  // Weak: a pending tick must not keep a closed stack's state alive (it would then be
  // destroyed with the io_context, on whichever thread destroys the engine).
  std::weak_ptr<StackState> weak = st;
  st->metrics_timer->async_wait([this, weak](const boost::system::error_code& ec) {
    auto st = weak.lock();
    if (ec || !st || st->closed || st->metrics_interval <= 0) return;
    // A tick still queued or running (a slow /proc on a loaded machine) makes this one
    // skip: ticks never pile up on the sampler thread.
    auto targets = sample_targets(*st);
    if (!targets.empty() && !st->sampler->busy.exchange(true)) {
      sampler.post([metrics = st->metrics, state = st->sampler, targets = std::move(targets), pss = st->metrics_pss.load()] {
        run_tick(*metrics, *state, targets, pss);
        state->busy = false;
      });
    }
    arm_metrics(st);
  });
}

void Stack::configure_metrics(double interval, bool pss) {
  auto st = state_;
  Engine::Impl* impl = &engine_->impl();
  impl->call([&] {
    bool was_on = st->metrics_interval > 0;
    st->metrics_interval = interval > 0 ? interval : 0;
    st->metrics_pss = pss;
    if (st->metrics_timer && !st->metrics_interval) st->metrics_timer->cancel();
    if (!was_on || !st->metrics_timer) impl->arm_metrics(st);
  });
}

std::vector<MetricSample> Stack::metrics_now() {
  auto st = state_;
  Engine::Impl* impl = &engine_->impl();
  bool on_demand = false;
  bool pss = false;
  auto targets = impl->call([&] {
    on_demand = st->metrics_interval <= 0;
    pss = st->metrics_pss.load();
    return on_demand ? impl->sample_targets(*st) : std::vector<SampleTarget>{};
  });
  if (on_demand) run_tick(*st->metrics, *st->sampler, targets, pss);
  return st->metrics->latest();
}

std::vector<MetricSample> Stack::samples(const std::string& service, double since) {
  std::optional<std::size_t> only;
  if (!service.empty()) {
    auto it = state_->index.find(service);
    if (it == state_->index.end()) throw Error(fmt::format("stack '{}' has no service '{}'", state_->spec.name, service));
    only = it->second;
  }
  return state_->metrics->samples(only, since);
}

std::string Stack::prometheus() {
  MetricsView v;
  v.stack = state_->spec.name;
  auto latest = metrics_now();
  v.status = status();
  v.counters = state_->metrics->counters();
  v.latest.resize(v.status.size());
  for (auto& m : latest) v.latest[m.service] = m;
  for (std::size_t i = 0; i < v.status.size(); ++i) v.logs.push_back(state_->metrics->log_counts(i));
  v.cost = state_->metrics->tick_cost();
  v.pss = state_->metrics_pss;
  return prometheus_text(v);
}

std::shared_ptr<StackMetrics> Stack::metrics() const { return state_->metrics; }

void Stack::note_manual_restart(const std::string& name) {
  auto it = state_->index.find(name);
  if (it == state_->index.end()) throw Error(fmt::format("stack '{}' has no service '{}'", state_->spec.name, name));
  state_->metrics->on_manual_restart(it->second);
}

void Stack::enable_history(std::size_t capacity) { state_->metrics->enable_history(capacity); }

std::vector<HistoryRecord> Stack::drain_history(std::uint64_t* lost) { return state_->metrics->drain_history(lost); }

}  // namespace corral
