#include "engine/tensor/storage.h"

#include "engine/memory/allocator.h"

namespace ipsnet {

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  allocator_ = &get_allocator(device);
  data_ = allocator_->allocate(nbytes);
}

Storage::~Storage() {
  if (data_) allocator_->deallocate(data_, nbytes_);
}

}  // namespace ipsnet
