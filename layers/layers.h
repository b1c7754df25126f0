// Umbrella header for ipsnet's layers.
#pragma once
#include "layers/basic.h"
#include "layers/batchnorm.h"
#include "layers/conv.h"
#include "layers/init.h"
#include "layers/linear.h"
#include "layers/module.h"
#include "layers/sequential.h"
