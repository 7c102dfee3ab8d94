// The conv weight gradient's split reduction (partial_sums.cu): dw (+)= the sum of `splits`
// partial results of `count` floats each, stored one after another in part.
#pragma once
#include <cstdint>

namespace convnet {

void sum_partials_cuda(const float* part, float* dw, int64_t count, int splits, bool accumulate);

}  // namespace convnet
