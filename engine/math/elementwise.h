// Element bodies shared by the CPU loops and the CUDA kernels.
//
// Each op is a struct with static host+device functions:
//   fwd(x, alpha)              y = f(x)
//   bwd(x, y, dy, alpha)       dx = dy * f'(x)   (may use x or the saved y)
// Binary ops: fwd(a, b). Formulas are in the comments; no containers, no
// exceptions, no printing here.
#pragma once
#include <cmath>
#include <cstdint>

#include "engine/common/hostdevice.h"

namespace ipsnet {
namespace math {

enum class UnaryOp : int {
  Relu, Sigmoid, Tanh, Exp, Log, Sqrt, Neg, Abs, AddScalar, MulScalar, PowScalar, Square,
  RSubScalar /* alpha - x */, Reciprocal, ClampMin /* max(x, alpha) */
};

enum class BinaryOp : int { Add, Sub, Mul, Div, Maximum, Minimum, BceWithLogits, Gt, Lt, Ge, Le, Eq, Ne };

// y = max(x, 0); dx = dy * [y > 0]  (y > 0 exactly when x > 0: backward reads
// the output, which the next layer usually saves anyway, so the input need not
// be kept alive)
struct ReluOp {
  template <typename T> IPSNET_HD static T fwd(T x, T) { return x > T(0) ? x : T(0); }
  template <typename T> IPSNET_HD static T bwd(T, T y, T dy, T) { return y > T(0) ? dy : T(0); }
};
// y = 1 / (1 + e^-x); dx = dy * y (1 - y)
struct SigmoidOp {
  template <typename T> IPSNET_HD static T fwd(T x, T) {
    return x >= T(0) ? T(1) / (T(1) + exp(-x)) : exp(x) / (T(1) + exp(x));
  }
  template <typename T> IPSNET_HD static T bwd(T, T y, T dy, T) { return dy * y * (T(1) - y); }
};
// y = tanh x; dx = dy (1 - y^2)
struct TanhOp {
  template <typename T> IPSNET_HD static T fwd(T x, T) { return tanh(x); }
  template <typename T> IPSNET_HD static T bwd(T, T y, T dy, T) { return dy * (T(1) - y * y); }
};
// y = e^x; dx = dy y
struct ExpOp {
  template <typename T> IPSNET_HD static T fwd(T x, T) { return exp(x); }
  template <typename T> IPSNET_HD static T bwd(T, T y, T dy, T) { return dy * y; }
};
// y = ln x; dx = dy / x
struct LogOp {
  template <typename T> IPSNET_HD static T fwd(T x, T) { return log(x); }
  template <typename T> IPSNET_HD static T bwd(T x, T, T dy, T) { return dy / x; }
};
// y = sqrt x; dx = dy / (2 y)
struct SqrtOp {
  template <typename T> IPSNET_HD static T fwd(T x, T) { return sqrt(x); }
  template <typename T> IPSNET_HD static T bwd(T, T y, T dy, T) { return dy / (T(2) * y); }
};
// y = -x
struct NegOp {
  template <typename T> IPSNET_HD static T fwd(T x, T) { return -x; }
  template <typename T> IPSNET_HD static T bwd(T, T, T dy, T) { return -dy; }
};
// y = |x|; dx = dy sign(x)
struct AbsOp {
  template <typename T> IPSNET_HD static T fwd(T x, T) { return x < T(0) ? -x : x; }
  template <typename T> IPSNET_HD static T bwd(T x, T, T dy, T) {
    return x > T(0) ? dy : (x < T(0) ? -dy : T(0));
  }
};
// y = x + a
struct AddScalarOp {
  template <typename T> IPSNET_HD static T fwd(T x, T a) { return x + a; }
  template <typename T> IPSNET_HD static T bwd(T, T, T dy, T) { return dy; }
};
// y = a x
struct MulScalarOp {
  template <typename T> IPSNET_HD static T fwd(T x, T a) { return x * a; }
  template <typename T> IPSNET_HD static T bwd(T, T, T dy, T a) { return dy * a; }
};
// y = x^a; dx = dy a x^(a-1)
struct PowScalarOp {
  template <typename T> IPSNET_HD static T fwd(T x, T a) { return pow(x, a); }
  template <typename T> IPSNET_HD static T bwd(T x, T, T dy, T a) { return dy * a * pow(x, a - T(1)); }
};
// y = x^2; dx = 2 x dy
struct SquareOp {
  template <typename T> IPSNET_HD static T fwd(T x, T) { return x * x; }
  template <typename T> IPSNET_HD static T bwd(T x, T, T dy, T) { return T(2) * x * dy; }
};
// y = a - x
struct RSubScalarOp {
  template <typename T> IPSNET_HD static T fwd(T x, T a) { return a - x; }
  template <typename T> IPSNET_HD static T bwd(T, T, T dy, T) { return -dy; }
};
// y = 1/x; dx = -dy y^2
struct ReciprocalOp {
  template <typename T> IPSNET_HD static T fwd(T x, T) { return T(1) / x; }
  template <typename T> IPSNET_HD static T bwd(T, T y, T dy, T) { return -dy * y * y; }
};
// y = max(x, a); dx = dy [x > a]
struct ClampMinOp {
  template <typename T> IPSNET_HD static T fwd(T x, T a) { return x > a ? x : a; }
  template <typename T> IPSNET_HD static T bwd(T x, T, T dy, T a) { return x > a ? dy : T(0); }
};

struct AddOp { template <typename T> IPSNET_HD static T fwd(T a, T b) { return a + b; } };
struct SubOp { template <typename T> IPSNET_HD static T fwd(T a, T b) { return a - b; } };
struct MulOp { template <typename T> IPSNET_HD static T fwd(T a, T b) { return a * b; } };
struct DivOp { template <typename T> IPSNET_HD static T fwd(T a, T b) { return a / b; } };
struct MaximumOp { template <typename T> IPSNET_HD static T fwd(T a, T b) { return a >= b ? a : b; } };
struct MinimumOp { template <typename T> IPSNET_HD static T fwd(T a, T b) { return a <= b ? a : b; } };
// Binary cross-entropy with logits x and targets z, stable form:
//   l = max(x, 0) - x z + log(1 + e^{-|x|});   dl/dx = sigmoid(x) - z
struct BceWithLogitsOp {
  template <typename T> IPSNET_HD static T fwd(T x, T z) {
    T ax = x < T(0) ? -x : x;
    return (x > T(0) ? x : T(0)) - x * z + log1p(exp(-ax));
  }
};
struct GtOp { template <typename T> IPSNET_HD static T fwd(T a, T b) { return a > b ? T(1) : T(0); } };
struct LtOp { template <typename T> IPSNET_HD static T fwd(T a, T b) { return a < b ? T(1) : T(0); } };
struct GeOp { template <typename T> IPSNET_HD static T fwd(T a, T b) { return a >= b ? T(1) : T(0); } };
struct LeOp { template <typename T> IPSNET_HD static T fwd(T a, T b) { return a <= b ? T(1) : T(0); } };
struct EqOp { template <typename T> IPSNET_HD static T fwd(T a, T b) { return a == b ? T(1) : T(0); } };
struct NeOp { template <typename T> IPSNET_HD static T fwd(T a, T b) { return a != b ? T(1) : T(0); } };

/// Calls f(OpStruct{}) for a unary op enum.
template <typename F>
IPSNET_HD void dispatch_unary(UnaryOp op, F&& f) {
  switch (op) {
    case UnaryOp::Relu: f(ReluOp{}); break;
    case UnaryOp::Sigmoid: f(SigmoidOp{}); break;
    case UnaryOp::Tanh: f(TanhOp{}); break;
    case UnaryOp::Exp: f(ExpOp{}); break;
    case UnaryOp::Log: f(LogOp{}); break;
    case UnaryOp::Sqrt: f(SqrtOp{}); break;
    case UnaryOp::Neg: f(NegOp{}); break;
    case UnaryOp::Abs: f(AbsOp{}); break;
    case UnaryOp::AddScalar: f(AddScalarOp{}); break;
    case UnaryOp::MulScalar: f(MulScalarOp{}); break;
    case UnaryOp::PowScalar: f(PowScalarOp{}); break;
    case UnaryOp::Square: f(SquareOp{}); break;
    case UnaryOp::RSubScalar: f(RSubScalarOp{}); break;
    case UnaryOp::Reciprocal: f(ReciprocalOp{}); break;
    case UnaryOp::ClampMin: f(ClampMinOp{}); break;
  }
}

template <typename F>
IPSNET_HD void dispatch_binary(BinaryOp op, F&& f) {
  switch (op) {
    case BinaryOp::Add: f(AddOp{}); break;
    case BinaryOp::Sub: f(SubOp{}); break;
    case BinaryOp::Mul: f(MulOp{}); break;
    case BinaryOp::Div: f(DivOp{}); break;
    case BinaryOp::Maximum: f(MaximumOp{}); break;
    case BinaryOp::Minimum: f(MinimumOp{}); break;
    case BinaryOp::BceWithLogits: f(BceWithLogitsOp{}); break;
    case BinaryOp::Gt: f(GtOp{}); break;
    case BinaryOp::Lt: f(LtOp{}); break;
    case BinaryOp::Ge: f(GeOp{}); break;
    case BinaryOp::Le: f(LeOp{}); break;
    case BinaryOp::Eq: f(EqOp{}); break;
    case BinaryOp::Ne: f(NeOp{}); break;
  }
}

/// Whether an op's backward reads the saved output y (else it reads x).
inline bool unary_backward_uses_output(UnaryOp op) {
  return op == UnaryOp::Relu || op == UnaryOp::Sigmoid || op == UnaryOp::Tanh || op == UnaryOp::Exp ||
         op == UnaryOp::Sqrt || op == UnaryOp::Reciprocal;
}

}  // namespace math
}  // namespace ipsnet
