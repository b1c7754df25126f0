// Inputs the fuzzers (fuzz/, issue 19) found to crash the readers, kept as
// regressions: each must now be one ipsnet::Error.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>

#include "data/binary_file.h"
#include "data/dataset.h"
#include "data/npy.h"
#include "data_test_util.h"
#include "engine/common/error.h"

using namespace ipsnet;

namespace {

std::vector<uint8_t> corpus_file(const std::string& rel) {
  std::ifstream in(std::string(IPSNET_SOURCE_DIR) + "/fuzz/corpus/" + rel, std::ios::binary);
  EXPECT_TRUE(in.good()) << rel;
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }

}  // namespace

TEST(ReaderRegressions, NpyShapeWhoseProductOverflowsInt64) {
  // (12333333333333321, 1113, 0): empty, but numel() multiplied past int64.
  try {
    data::NpyArray a = data::parse_npy(corpus_file("npy/regression_shape_overflow"), "x.npy");
    (void)a.as_int64();
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("x.npy"), std::string::npos) << e.what();
  }
}

TEST(ReaderRegressions, DatasetRecordWithInconsistentRowCounts) {
  // A record whose CRCs are right but whose row counts run past its nonzeros
  // (read_image wrote out of bounds). The fuzz harness's layout: u32 index
  // length, index, data; the CRCs are fixed as fuzz/fuzz_dataset.cpp does.
  std::vector<uint8_t> in = corpus_file("dataset/regression_row_counts");
  ASSERT_GE(in.size(), 4u);
  uint32_t ilen;
  std::memcpy(&ilen, in.data(), 4);
  std::vector<uint8_t> index(in.begin() + 4, in.begin() + 4 + ilen), records(in.begin() + 4 + ilen, in.end());
  put32(records.data() + 60, data::crc32_of(records.data(), 60));
  for (size_t e = 64; e + 128 <= index.size(); e += 128) {
    uint64_t off, bytes;
    std::memcpy(&off, &index[e], 8);
    std::memcpy(&bytes, &index[e + 8], 8);
    if (off <= records.size() && bytes <= records.size() - off)
      put32(&index[e + 16], data::crc32_of(records.data() + off, bytes));
  }
  std::memcpy(&index[28], &records[60], 4);
  put32(&index[24], data::crc32_of(index.data() + 64, (index.size() - 64) / 128 * 128));
  put32(&index[60], data::crc32_of(index.data(), 60));
  testing_data::TempDir d;
  testing_data::write_file(d / "train.ipsd", records, false);
  testing_data::write_file(d / "train.ipsx", index, false);
  try {
    data::DatasetReader r = data::DatasetReader::open(d.path, "train");
    for (int64_t i = 0; i < r.size(); ++i) {
      std::vector<float> img(static_cast<size_t>(r.height() * r.width()));
      r.read_image(i, img.data());
    }
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("corrupt record"), std::string::npos) << e.what();
  }
}
