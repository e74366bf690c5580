#include "preprocess.hpp"

#include <algorithm>
#include <cmath>

namespace omni::vla {

namespace {

// Keys' cubic convolution with a = -0.5: torch's choice for antialiased bicubic (PIL compatible).
float aa_bicubic(float x) {
    constexpr float a = -0.5f;
    x = std::fabs(x);
    if (x < 1.0f) return ((a + 2.0f) * x - (a + 3.0f)) * x * x + 1.0f;
    if (x < 2.0f) return ((a * x - 5.0f * a) * x + 8.0f * a) * x - 4.0f * a;
    return 0.0f;
}

struct taps {
    std::vector<int64_t> start, count;
    std::vector<float>   w;  // count[i] weights per output, at offset i * max_taps
    int64_t              max_taps = 0;
};

// torch's _compute_index_ranges_weights for align_corners=False, antialias=True, in float.
taps make_taps(int64_t in, int64_t out) {
    taps t;
    const float scale    = static_cast<float>(in) / static_cast<float>(out);
    const float support  = scale >= 1.0f ? 2.0f * scale : 2.0f;
    const float invscale = scale >= 1.0f ? 1.0f / scale : 1.0f;
    t.max_taps           = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
    t.start.resize(static_cast<size_t>(out));
    t.count.resize(static_cast<size_t>(out));
    t.w.assign(static_cast<size_t>(out * t.max_taps), 0.0f);
    for (int64_t i = 0; i < out; ++i) {
        const float   center = scale * (static_cast<float>(i) + 0.5f);
        const int64_t xmin   = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5f), 0);
        const int64_t xsize  = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5f), in) - xmin;
        float *       w      = &t.w[static_cast<size_t>(i * t.max_taps)];
        float         total  = 0.0f;
        const int64_t n      = std::min(xsize, t.max_taps);
        for (int64_t j = 0; j < n; ++j) {
            w[j] = aa_bicubic((static_cast<float>(j + xmin) - center + 0.5f) * invscale);
            total += w[j];
        }
        if (total != 0.0f) {
            for (int64_t j = 0; j < n; ++j) w[j] /= total;
        }
        t.start[static_cast<size_t>(i)] = xmin;
        t.count[static_cast<size_t>(i)] = n;
    }
    return t;
}

}  // namespace

std::vector<uint8_t> resize_rgb(const rgb_view & img, int64_t size) {
    const int64_t w = img.width, h = img.height;
    std::vector<uint8_t> out(static_cast<size_t>(size * size * 3));
    if (w == size && h == size) {  // identity, as in Python
        for (int64_t y = 0; y < h; ++y) {
            std::copy_n(img.data + y * img.stride, 3 * w, out.begin() + static_cast<std::ptrdiff_t>(y * 3 * w));
        }
        return out;
    }
    // horizontal pass (width -> size) in float, then vertical (height -> size)
    const taps tx = make_taps(w, size), ty = make_taps(h, size);
    std::vector<float> mid(static_cast<size_t>(h * size * 3));
    for (int64_t y = 0; y < h; ++y) {
        const uint8_t * row = img.data + y * img.stride;
        for (int64_t x = 0; x < size; ++x) {
            const float * wt = &tx.w[static_cast<size_t>(x * tx.max_taps)];
            for (int c = 0; c < 3; ++c) {
                float acc = 0.0f;
                for (int64_t j = 0; j < tx.count[static_cast<size_t>(x)]; ++j) {
                    acc += wt[j] * static_cast<float>(row[(tx.start[static_cast<size_t>(x)] + j) * 3 + c]);
                }
                mid[static_cast<size_t>((y * size + x) * 3 + c)] = acc;
            }
        }
    }
    for (int64_t y = 0; y < size; ++y) {
        const float * wt = &ty.w[static_cast<size_t>(y * ty.max_taps)];
        for (int64_t x = 0; x < size; ++x) {
            for (int c = 0; c < 3; ++c) {
                float acc = 0.0f;
                for (int64_t j = 0; j < ty.count[static_cast<size_t>(y)]; ++j) {
                    acc += wt[j] * mid[static_cast<size_t>(((ty.start[static_cast<size_t>(y)] + j) * size + x) * 3 + c)];
                }
                // torch.round: half to even (the default rounding mode), then clamp to uint8
                const float r = std::nearbyint(acc);
                out[static_cast<size_t>((y * size + x) * 3 + c)] = static_cast<uint8_t>(std::clamp(r, 0.0f, 255.0f));
            }
        }
    }
    return out;
}

void append_pixel_planes(const rgb_view & img, int64_t size, const std::vector<tower_norm> & towers,
                         std::vector<float> & out) {
    const std::vector<uint8_t> px    = resize_rgb(img, size);
    const size_t               plane = static_cast<size_t>(size * size);
    for (const tower_norm & t : towers) {
        for (int c = 0; c < 3; ++c) {
            const size_t base = out.size();
            out.resize(base + plane);
            for (size_t i = 0; i < plane; ++i) {
                // same float32 operations as torch: (x / 255 - mean) / std
                const float v = static_cast<float>(px[i * 3 + static_cast<size_t>(c)]) / 255.0f;
                out[base + i] = (v - t.mean[static_cast<size_t>(c)]) / t.std[static_cast<size_t>(c)];
            }
        }
    }
}

}  // namespace omni::vla
