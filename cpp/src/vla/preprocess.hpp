// Raw RGB camera images -> the pixel_values tensor a VLA graph consumes, in C++.
//
// Mirrors python/omnimodel/arch/openvla_oft/preprocess.py: resize to the model's square size (a
// no-op at native resolution), x / 255, then one normalised copy per vision tower stacked on
// channels, images after one another: (1, 3 * towers * images, S, S) row-major.
//
// At native resolution the result is bit-identical to Python. Otherwise the resize is our port of
// torch's antialiased bicubic (F.interpolate(mode="bicubic", antialias=True), Keys a = -0.5,
// support 2 * scale when shrinking, horizontal pass then vertical, round half to even, clamp):
// within one uint8 level of Python's, not guaranteed bit-exact (float summation order differs).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace omni::vla {

struct rgb_view {
    const uint8_t * data   = nullptr;
    int64_t         width  = 0;
    int64_t         height = 0;
    int64_t         stride = 0;  // bytes between row starts, >= 3 * width
};

struct tower_norm {
    std::array<float, 3> mean{}, std{};
};

// (H, W, 3) -> (size, size, 3) uint8, tightly packed.
std::vector<uint8_t> resize_rgb(const rgb_view & img, int64_t size);

// Append one image's channels (towers.size() * 3 planes of size x size floats) to out.
void append_pixel_planes(const rgb_view & img, int64_t size, const std::vector<tower_norm> & towers,
                         std::vector<float> & out);

}  // namespace omni::vla
