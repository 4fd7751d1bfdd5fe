// The exposition: escaped label values, histogram buckets cumulative and ending at +Inf,
// no pid labels.
#include "corral/metrics/prometheus.hpp"

#include <gtest/gtest.h>

using namespace corral;

TEST(Prometheus, EscapesLabelValues) {
  EXPECT_EQ(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

TEST(Prometheus, RendersCountersHistogramsAndSamples) {
  MetricsView v;
  v.stack = "s\"1";
  ServiceStatus st;
  st.name = "web";
  st.state = State::ready;
  st.pid = 42;
  v.status = {st};
  ServiceCounters c;
  c.starts = 2;
  c.ready.observe(0.02);
  c.ready.observe(3);
  c.exit_codes[1] = 1;
  v.counters = {c};
  MetricSample m;
  m.cpu_user = 1.5;
  m.rss_bytes = 4096;
  m.pid = 42;
  v.latest = {m};
  v.logs = {{1, 2, 3, 4}};
  auto text = prometheus_text(v);
  const std::string l = "stack=\"s\\\"1\",service=\"web\"";
  EXPECT_NE(text.find("corral_service_up{" + l + "} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("corral_service_starts_total{" + l + "} 2\n"), std::string::npos);
  EXPECT_NE(text.find("corral_service_exits_total{" + l + ",code=\"1\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("corral_service_ready_duration_seconds_bucket{" + l + ",le=\"0.025\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("corral_service_ready_duration_seconds_bucket{" + l + ",le=\"5\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("corral_service_ready_duration_seconds_bucket{" + l + ",le=\"+Inf\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("corral_service_ready_duration_seconds_count{" + l + "} 2\n"), std::string::npos);
  EXPECT_NE(text.find("corral_service_cpu_seconds_total{" + l + ",mode=\"user\"} 1.5\n"), std::string::npos);
  EXPECT_NE(text.find("corral_service_memory_bytes{" + l + ",memtype=\"rss\"} 4096\n"), std::string::npos);
  EXPECT_NE(text.find("corral_log_lines_total{" + l + ",stream=\"stderr\"} 2\n"), std::string::npos);
  EXPECT_EQ(text.find("pid="), std::string::npos);
  EXPECT_EQ(text.find("42"), std::string::npos);
}
