// Llama (SentencePiece-style) tokenisation in C++ from the vocabulary stored in the GGUF, so a
// robot needs no Python to turn an instruction into token ids.
//
// The file carries tokenizer.ggml.{tokens, token_type} and either
//   merges: ranked "left right" pairs from tokenizer.json. Hugging Face BPE semantics: special
//           (added) tokens are cut out of the raw text first, each remaining segment gets the "▁"
//           prefix and spaces -> "▁", then the adjacent pair with the lowest rank merges (leftmost
//           on ties) until none applies; characters outside the vocabulary become <0xXX> byte pieces.
//   scores: from tokenizer.model. SentencePiece BPE semantics: the whole text is one segment, the
//           adjacent pair whose concatenation is a normal piece with the highest score merges first;
//           leftover symbols outside the vocabulary become byte pieces.
// Both are what the Python side (python/omnimodel/arch/openvla_oft/tokenizer.py) runs.
#pragma once

#include "../model.hpp"

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace omni::vla {

// UTF-8 <-> code points. Decoding fails with INVALID_ARGUMENT naming `what` on malformed input.
std::vector<uint32_t> utf8_decode(const std::string & s, const char * what);
std::string           utf8_encode(const std::vector<uint32_t> & cps);

// Python's str.lower() (full Unicode, Final_Sigma included), and whether str.strip() would leave
// nothing.
std::vector<uint32_t> python_lower(const std::vector<uint32_t> & cps);
bool                  python_is_blank(const std::vector<uint32_t> & cps);

class tokenizer {
public:
    explicit tokenizer(const model & m);  // FORMAT / NOT_FOUND when the vocabulary is missing or bad

    // Token ids of `text` (UTF-8), without BOS: what the Python encoder yields for it.
    std::vector<int32_t> encode(const std::string & text) const;
    int32_t              piece_id(const std::string & piece) const;  // -1 when absent
    size_t               size() const { return tokens_.size(); }

private:
    enum { NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6 };

    void encode_segment(const std::vector<uint32_t> & cps, std::vector<int32_t> & out) const;
    void byte_fallback(const std::string & text, std::vector<int32_t> & out) const;

    std::vector<std::string>                      tokens_;
    std::vector<int32_t>                          types_;
    std::vector<float>                            scores_;      // SentencePiece mode
    std::map<std::pair<int32_t, int32_t>, int32_t> merge_rank_;  // Hugging Face mode
    bool                                          hf_mode_ = false;
    bool                                          add_space_prefix_ = true;
    std::unordered_map<std::string, int32_t>      ids_;
    std::vector<std::pair<std::string, int32_t>>  specials_;  // cut out of raw text (HF mode)
    int32_t                                       byte_ids_[256];
    int32_t                                       unk_id_ = 0;
};

}  // namespace omni::vla
