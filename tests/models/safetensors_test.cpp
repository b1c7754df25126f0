// safetensors: round trip, metadata, atomic write, corruption errors, Python interop.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "models/safetensors.h"
#include "tests/models/golden_util.h"

namespace ipsnet {
namespace {

std::string tmp(const std::string& name) { return ::testing::TempDir() + "/" + name; }

TensorDict sample() {
  TensorDict d;
  d.insert("w", Tensor::from_vector<float>({1.5f, -2, 3, 4, 5, 6}, {2, 3}));
  d.insert("b.x", Tensor::from_vector<double>({0.25, 1e-300}, {2}));
  d.insert("n", Tensor::full({}, 42, DType::Int64));
  d.insert("empty", Tensor::zeros({0, 3}));
  return d;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string error_of(const std::string& path) {
  try {
    safetensors::load(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Safetensors, RoundTripWithMetadata) {
  std::string path = tmp("rt.safetensors");
  safetensors::save(path, sample(), {{"format", "pt"}, {"note", "quote \" and \\ and \n"}});
  // The temporary (PATH.tmp-PID-N) was renamed away: nothing named PATH.tmp* is left beside PATH.
  const std::string tmp_prefix = std::filesystem::path(path).filename().string() + ".tmp";
  for (const auto& entry : std::filesystem::directory_iterator(std::filesystem::path(path).parent_path()))
    EXPECT_NE(entry.path().filename().string().rfind(tmp_prefix, 0), 0u) << entry.path();
  safetensors::File f = safetensors::load(path);
  EXPECT_EQ(f.tensors.keys(), (std::vector<std::string>{"w", "b.x", "n", "empty"}));
  EXPECT_EQ(f.tensors.at("w").shape(), (Shape{2, 3}));
  EXPECT_EQ(f.tensors.at("w").to_vector<float>(), sample().at("w").to_vector<float>());
  EXPECT_EQ(f.tensors.at("b.x").to_vector<double>(), sample().at("b.x").to_vector<double>());
  EXPECT_EQ(f.tensors.at("n").dtype(), DType::Int64);
  EXPECT_EQ(f.tensors.at("n").dim(), 0);
  EXPECT_EQ(f.tensors.at("n").item(), 42);
  EXPECT_EQ(f.tensors.at("empty").shape(), (Shape{0, 3}));
  EXPECT_EQ(f.metadata.at("note"), "quote \" and \\ and \n");
  std::string bytes = safetensors::serialize(sample());
  uint64_t n = 0;
  for (int k = 7; k >= 0; --k) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<size_t>(k)]);
  EXPECT_EQ((8 + n) % 8, 0u);  // data section aligned
}

TEST(Safetensors, NonContiguousInputIsWrittenRowMajor) {
  TensorDict d;
  d.insert("t", Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3}).transpose(0, 1));
  safetensors::File f = safetensors::deserialize(safetensors::serialize(d));
  EXPECT_EQ(f.tensors.at("t").to_vector<float>(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
}

TEST(Safetensors, CorruptFilesGiveOneClearError) {
  std::string good = safetensors::serialize(sample());
  std::string p = tmp("bad.safetensors");
  write_bytes(p, good.substr(0, good.size() - 5));
  std::string e = error_of(p);
  EXPECT_NE(e.find(p), std::string::npos) << e;
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;
  write_bytes(p, good.substr(0, 5));
  EXPECT_NE(error_of(p).find("too short"), std::string::npos);
  std::string big = good;
  big[7] = 0x7f;  // absurd header length
  write_bytes(p, big);
  EXPECT_NE(error_of(p).find("header length"), std::string::npos);
  std::string js = good;
  js[9] = '[';  // break the JSON
  write_bytes(p, js);
  EXPECT_NE(error_of(p).find("malformed header JSON"), std::string::npos) << error_of(p);
  auto with_header = [](const std::string& h, size_t data) {
    std::string s;
    for (int k = 0; k < 8; ++k) s += static_cast<char>((h.size() >> (8 * k)) & 0xFF);
    return s + h + std::string(data, '\0');
  };
  write_bytes(p, with_header(R"({"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})", 4));
  EXPECT_NE(error_of(p).find("BF16 is not supported"), std::string::npos) << error_of(p);
  write_bytes(p, with_header(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8));
  EXPECT_NE(error_of(p).find("needs 12"), std::string::npos) << error_of(p);
  write_bytes(p, with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})", 6));
  EXPECT_NE(error_of(p).find("overlapping"), std::string::npos) << error_of(p);
  write_bytes(p, with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 9));
  EXPECT_NE(error_of(p).find("cover"), std::string::npos) << error_of(p);
  EXPECT_NE(error_of(tmp("does_not_exist.safetensors")).find("cannot open"), std::string::npos);
  EXPECT_THROW(safetensors::save(tmp("no_such_dir/x.safetensors"), sample()), Error);
}

TEST(Safetensors, ChecksumsCatchAFlippedByte) {
  std::string good = safetensors::serialize(sample(), {{"epoch", "3"}});
  uint64_t n = 0;
  for (int k = 7; k >= 0; --k) n = (n << 8) | static_cast<unsigned char>(good[static_cast<size_t>(k)]);
  EXPECT_NO_THROW(safetensors::deserialize(good));
  EXPECT_EQ(safetensors::deserialize(good).metadata.size(), 1u);  // the checksums are not user metadata
  std::string bad = good;
  bad[8 + n + 1] ^= 0x01;  // a data byte of the first tensor, "w"
  try {
    safetensors::deserialize(bad, "ckpt");
    ADD_FAILURE() << "a flipped data byte was not noticed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ckpt: tensor 'w' fails its CRC-32 check"), std::string::npos) << e.what();
  }
  bad = good;
  size_t at = bad.find("\"epoch\":\"3\"");
  ASSERT_NE(at, std::string::npos);
  bad[at + 9] = '4';  // an edited metadata value
  try {
    safetensors::deserialize(bad, "ckpt");
    ADD_FAILURE() << "an edited metadata value was not noticed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("metadata fail their CRC-32 check"), std::string::npos) << e.what();
  }
}

TEST(Safetensors, ReadsFilesWrittenByPython) {
  // The golden fixtures were written by tests/fixtures/safetensors_np.py.
  safetensors::File f = safetensors::load(golden::fixture("aggregator.safetensors"));
  EXPECT_EQ(f.tensors.at("emb").shape(), (Shape{2, 10, 128}));
  EXPECT_EQ(f.tensors.at("target.majority").dtype(), DType::Int64);
  EXPECT_EQ(f.tensors.at("loss").dim(), 0);
  EXPECT_FALSE(f.metadata.at("what").empty());
}

TEST(Safetensors, PythonReadsFilesWrittenHere) {
  if (std::system("/usr/bin/python3 -c 'import numpy' > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 with numpy not available";
  std::string path = tmp("for_python.safetensors");
  safetensors::save(path, sample(), {{"format", "pt"}});
  std::string cmd = "cd " + std::string(IPSNET_FIXTURES_DIR) +
                    " && /usr/bin/python3 -c \"import safetensors_np as s; t, m = s.load('" + path +
                    "'); assert m['format'] == 'pt'; assert t['w'].tolist() == [[1.5, -2, 3], [4, 5, 6]]; "
                    "assert int(t['n']) == 42 and t['n'].dtype.name == 'int64'; assert t['b.x'].dtype.name == "
                    "'float64'; assert t['empty'].shape == (0, 3)\"";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

}  // namespace
}  // namespace ipsnet
