// Umbrella header for the ipsnet engine.
#pragma once
#include "engine/autograd/grad_mode.h"
#include "engine/autograd/node.h"
#include "engine/backend/backend.h"
#include "engine/common/error.h"
#include "engine/memory/allocator.h"
#include "engine/ops/ops.h"
#include "engine/optim/optim.h"
#include "engine/random/generator.h"
#include "engine/tensor/tensor.h"
