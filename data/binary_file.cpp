#include "data/binary_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>

#include "engine/common/error.h"

namespace ipsnet {
namespace data {

uint32_t crc32_of(const void* p, size_t n, uint32_t crc) {
  const Bytef* b = static_cast<const Bytef*>(p);
  // zlib's crc32 takes uInt lengths; feed large buffers in pieces.
  while (n > 0) {
    const uInt k = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    crc = static_cast<uint32_t>(::crc32(crc, b, k));
    b += k;
    n -= k;
  }
  return crc;
}

MappedFile::~MappedFile() {
  if (ptr && size) ::munmap(const_cast<uint8_t*>(ptr), size);
}

std::shared_ptr<MappedFile> MappedFile::map(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  IPSNET_CHECK(fd >= 0, "cannot open dataset file '", path, "': ", std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    IPSNET_FAIL("cannot stat '", path, "': ", std::strerror(e));
  }
  auto m = std::make_shared<MappedFile>();
  m->size = static_cast<size_t>(st.st_size);
  if (m->size > 0) {
    void* p = ::mmap(nullptr, m->size, PROT_READ, MAP_SHARED, fd, 0);
    const int e = errno;
    ::close(fd);
    IPSNET_CHECK(p != MAP_FAILED, "cannot memory-map '", path, "': ", std::strerror(e));
    m->ptr = static_cast<const uint8_t*>(p);
  } else {
    ::close(fd);
  }
  return m;
}

}  // namespace data
}  // namespace ipsnet
