// Tensor: a strided view of refcounted Storage, with autograd metadata.
//
// Copies of a Tensor share the same TensorImpl (like torch::Tensor). Views
// (reshape of a contiguous tensor, permute, transpose, slice, expand,
// unsqueeze, squeeze, select) share storage and are differentiable.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "engine/common/error.h"
#include "engine/tensor/dtype.h"
#include "engine/tensor/shape.h"
#include "engine/tensor/storage.h"

namespace ipsnet {

class Node;
class Tensor;
class Generator;

struct AutogradMeta;

class TensorImpl {
 public:
  TensorImpl(std::shared_ptr<Storage> storage, Shape shape, Shape strides, int64_t offset,
             DType dtype);
  ~TensorImpl();
  std::shared_ptr<Storage> storage_;
  Shape shape_;
  Shape strides_;
  int64_t offset_;  // in elements
  DType dtype_;
  std::unique_ptr<AutogradMeta> autograd_;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories --------------------------------------------------------
  static Tensor empty(const Shape& shape, DType dtype = DType::Float32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::Float32, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::Float32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::Float32,
                     Device device = Device::cpu());
  static Tensor scalar(double value, DType dtype = DType::Float32, Device device = Device::cpu());
  /// 0, 1, ..., n-1
  static Tensor arange(int64_t n, DType dtype = DType::Int64, Device device = Device::cpu());
  template <typename T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape,
                            Device device = Device::cpu());
  /// Uniform in [lo, hi) / standard normal, from a seeded generator (CPU draw, then moved).
  static Tensor rand(const Shape& shape, Generator& gen, double lo = 0.0, double hi = 1.0,
                     DType dtype = DType::Float32, Device device = Device::cpu());
  static Tensor randn(const Shape& shape, Generator& gen, double mean = 0.0, double std = 1.0,
                      DType dtype = DType::Float32, Device device = Device::cpu());

  // ---- metadata ---------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl_->shape_; }
  const Shape& strides() const { return impl_->strides_; }
  int64_t dim() const { return static_cast<int64_t>(impl_->shape_.size()); }
  /// Size of dim d (negative counts from the end).
  int64_t size(int64_t d) const;
  int64_t stride(int64_t d) const;
  int64_t numel() const { return shape_numel(impl_->shape_); }
  int64_t offset() const { return impl_->offset_; }
  DType dtype() const { return impl_->dtype_; }
  Device device() const { return impl_->storage_->device(); }
  bool is_contiguous() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  const std::shared_ptr<Storage>& storage() const { return impl_->storage_; }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

  /// Pointer to the first element (offset applied); checks the dtype.
  template <typename T>
  T* data() const {
    IPSNET_CHECK(DTypeOf<T>::value == dtype(), "data<", dtype_name(DTypeOf<T>::value),
                 ">: tensor has dtype ", dtype_name(dtype()));
    return static_cast<T*>(impl_->storage_->data()) + impl_->offset_;
  }
  void* raw_data() const {
    return static_cast<char*>(impl_->storage_->data()) + impl_->offset_ * static_cast<int64_t>(dtype_size(dtype()));
  }
  /// The single element of a one-element tensor, converted to double.
  double item() const;
  /// All elements (row-major), converted to T; copies from the device if needed.
  template <typename T>
  std::vector<T> to_vector() const;

  // ---- views (differentiable) ------------------------------------------
  Tensor view(const Shape& shape) const;     // requires compatible strides; one dim may be -1
  Tensor reshape(const Shape& shape) const;  // view when possible, else contiguous copy
  Tensor flatten(int64_t start = 0, int64_t end = -1) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor transpose(int64_t a, int64_t b) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const { return slice(dim, start, start + length); }
  Tensor select(int64_t dim, int64_t index) const;
  Tensor expand(const Shape& shape) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;

  // ---- copies -----------------------------------------------------------
  Tensor contiguous() const;
  Tensor clone() const;
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;

  // ---- in-place (not differentiable; bump the version counter) ----------
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }
  /// Copies src (broadcast to this shape, any dtype/device) into this tensor's elements.
  Tensor& copy_(const Tensor& src);

  // ---- autograd ---------------------------------------------------------
  bool requires_grad() const;
  /// Marks a leaf as requiring gradients (returns *this).
  Tensor& set_requires_grad(bool on);
  /// Accumulated gradient of a leaf (undefined until a backward reaches it).
  Tensor grad() const;
  void set_grad(const Tensor& g);
  void zero_grad();
  std::shared_ptr<Node> grad_fn() const;
  bool is_leaf() const;
  /// Backpropagates from this tensor. A non-scalar needs `gradient` of the same shape.
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;
  /// Same storage, no autograd history.
  Tensor detach() const;

  /// Debug printing: dtype, device, shape and (up to `max_elems`) values.
  std::string to_string(int64_t max_elems = 64) const;

 private:
  std::shared_ptr<TensorImpl> impl_;
  friend class AutogradAccess;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

/// Throws naming `op` when t is undefined.
void check_defined(const Tensor& t, const char* op, const char* arg);

}  // namespace ipsnet
