#include "corral/template/template.hpp"

#include <gtest/gtest.h>

#include "corral/core/types.hpp"

using namespace corral;

namespace {
std::optional<std::string> resolve(std::string_view key) {
  if (key == "port.http") return "8080";
  if (key == "db.port.main") return "5432";
  if (key == "name") return "api";
  return std::nullopt;
}
}  // namespace

TEST(Template, FillsKeysWithOrWithoutSpaces) {
  EXPECT_EQ(render_template("serve --port {{port.http}}", resolve), "serve --port 8080");
  EXPECT_EQ(render_template("redis://127.0.0.1:{{ db.port.main }}/{{name}}", resolve), "redis://127.0.0.1:5432/api");
  EXPECT_EQ(render_template("no templates {here}", resolve), "no templates {here}");
  EXPECT_EQ(render_template("", resolve), "");
}

TEST(Template, UnknownKeyAndUnclosedBracesAreConfigErrors) {
  try {
    render_template("x {{port.nope}}", resolve);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("port.nope"), std::string::npos);
  }
  EXPECT_THROW(render_template("x {{port.http", resolve), ConfigError);
}

TEST(Template, QuotedLiteralWritesBraces) {
  EXPECT_EQ(render_template(R"(--format '{{ "{{" }}.Names}}')", resolve), "--format '{{.Names}}'");
}
