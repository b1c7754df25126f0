// JsonWriter: compact and indented text, string escapes, numbers, misuse.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "engine/common/error.h"
#include "engine/common/json_writer.h"

namespace ipsnet {
namespace {

TEST(JsonWriter, CompactNesting) {
  JsonWriter j;
  j.begin_object()
      .member("a", 1)
      .key("b")
      .begin_array()
      .value(true)
      .value(false)
      .value("x")
      .end_array()
      .key("c")
      .begin_object()
      .end_object()
      .key("d")
      .begin_array()
      .end_array()
      .member("e", int64_t{-3})
      .member("f", uint64_t{18446744073709551615ull})
      .end_object();
  EXPECT_EQ(j.str(), R"({"a":1,"b":[true,false,"x"],"c":{},"d":[],"e":-3,"f":18446744073709551615})");
}

TEST(JsonWriter, IndentedLikePythonJsonDumps) {
  JsonWriter j(2);
  j.begin_object().member("name", "ips").key("shape").begin_array().value(2).value(3).end_array();
  j.key("empty").begin_object().end_object().member("on", true).end_object();
  EXPECT_EQ(j.str(),
            "{\n"
            "  \"name\": \"ips\",\n"
            "  \"shape\": [\n"
            "    2,\n"
            "    3\n"
            "  ],\n"
            "  \"empty\": {},\n"
            "  \"on\": true\n"
            "}");
}

TEST(JsonWriter, StringsAreEscaped) {
  EXPECT_EQ(json_quote("plain"), "\"plain\"");
  EXPECT_EQ(json_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(json_quote("\n\r\t\x01\x1f"), "\"\\n\\r\\t\\u0001\\u001f\"");
  EXPECT_EQ(json_quote("caf\xc3\xa9"), "\"caf\xc3\xa9\"");  // UTF-8 bytes pass through
  JsonWriter j;
  j.begin_object().member("k\"ey", "v\\al").end_object();
  EXPECT_EQ(j.str(), "{\"k\\\"ey\":\"v\\\\al\"}");
}

TEST(JsonWriter, DoublesRoundTripAndNonFiniteIsRefused) {
  JsonWriter j;
  j.begin_array().value(0.12).value(0.1).value(1.0).value(-2.5e-300).end_array();
  EXPECT_EQ(j.str(), "[0.12,0.10000000000000001,1,-2.5e-300]");
  JsonWriter n;
  n.begin_array();
  EXPECT_THROW(n.value(std::nan("")), Error);
  EXPECT_THROW(n.value(std::numeric_limits<double>::infinity()), Error);
}

TEST(JsonWriter, MisuseThrows) {
  {
    JsonWriter j;
    j.begin_object();
    EXPECT_THROW(j.value(1), Error);  // no key
  }
  {
    JsonWriter j;
    j.begin_array();
    EXPECT_THROW(j.key("k"), Error);  // keys belong in objects
    EXPECT_THROW(j.end_object(), Error);
  }
  {
    JsonWriter j;
    j.begin_object().key("k");
    EXPECT_THROW(j.key("k2"), Error);  // a key without a value
    EXPECT_THROW(j.end_object(), Error);
  }
  {
    JsonWriter j;
    j.begin_object();
    EXPECT_THROW(j.str(), Error);  // unclosed
  }
  {
    JsonWriter j;
    j.value(1);
    EXPECT_THROW(j.value(2), Error);  // one top-level value
    EXPECT_EQ(j.str(), "1");
  }
}

}  // namespace
}  // namespace ipsnet
