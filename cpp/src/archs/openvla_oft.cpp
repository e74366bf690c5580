// openvla-oft: OpenVLA-OFT with the L1-regression action head (parallel decoding), as the PyTorch
// reference python/omnimodel/arch/openvla_oft/modeling.py computes it.
//
//   pixel_values (1, 6*num_images, S, S) --> per image: DINOv2 on channels 0-2, SigLIP on 3-5, each
//       the output of block feature_block_index (= depth-2) without its prefix tokens, concatenated
//       on features; images concatenated along the sequence
//   --> projector (fc1, GELU, fc2, GELU, fc3)  [+ proprio_projector(proprio) as one more token]
//   --> [BOS] [prefix] [prompt ... "▁"] [A zeroed action slots] [EOS]  (A = chunk * action_dim)
//   --> Llama, bidirectional attention (no mask) unless openvla-oft.causal_attention, final RMSNorm
//   --> rows [num_prefix + L - 1, ... + A) (each slot's preceding position), reshaped to
//       (chunk, action_dim * D) --> MLPResNet --> normalized_actions (chunk, action_dim)
//   --> actions: un-normalised with the dataset statistics in the metadata (mask dims pass through).
//
// Inputs (float32): "pixel_values" (1, 6*num_images, S, S); "input_ids" (1, L + A + 1) token ids as
// floats (the prompt BOS .. "▁", then A placeholders, then EOS; see OpenVLAOFT.full_input_ids);
// "proprio" (1, proprio_dim), already normalised, when the model has a proprio projector.
// Hyper-parameters: metadata under "openvla-oft." (written by python/omnimodel/arch/openvla_oft/export.py).
#include "../blocks.hpp"
#include "../graph.hpp"

#include "archs.hpp"
#include "../error.hpp"

namespace omni {

namespace {

constexpr const char * K = "openvla-oft.";

struct vit_tower {
    std::string      name;  // "featurizer" | "fused_featurizer"
    int64_t          patch_size = 0, block_count = 0, feature_block = 0, reg_tokens = 0;
    bool             class_token = false, no_embed_class = false;
    vit_block_params block;
};

vit_tower read_tower(const model & m, const std::string & name) {
    const std::string p = std::string(K) + "vision." + name + ".";
    vit_tower t;
    t.name               = name;
    t.patch_size         = m.get_int(p + "patch_size");
    t.block_count        = m.get_int(p + "block_count");
    t.feature_block      = m.get_int(p + "feature_block_index", t.block_count - 2);
    t.reg_tokens         = m.get_int(p + "reg_tokens", 0);
    t.class_token        = m.get_int(p + "class_token", 0) != 0;
    t.no_embed_class     = m.get_int(p + "no_embed_class", 0) != 0;
    t.block.n_embd       = m.get_int(p + "embedding_length");
    t.block.n_head       = m.get_int(p + "head_count");
    t.block.n_ff         = m.get_int(p + "feed_forward_length");
    t.block.eps          = static_cast<float>(m.get_float(p + "layer_norm_eps", 1e-6));
    t.block.layer_scale  = m.get_int(p + "layer_scale", 0) != 0;
    t.block.act          = parse_act_kind(m.get_string(p + "activation", "gelu"));
    if (t.feature_block < 0 || t.feature_block >= t.block_count) {
        fail(OMNIMODEL_ERR_FORMAT, format("%sfeature_block_index %lld is outside 0..%lld", p.c_str(),
                                          (long long) t.feature_block, (long long) t.block_count - 1));
    }
    return t;
}

// pixels {W, H, 3, B} -> features of block feature_block, prefix tokens dropped: {D, n_patches, B}
ggml_tensor * build_vit_tower(graph_builder & gb, ggml_tensor * pixels, const vit_tower & t) {
    ggml_context *    ctx = gb.ctx0;
    const std::string p   = "vision_backbone." + t.name + ".";
    const int64_t     d   = t.block.n_embd;
    const int64_t     nb  = pixels->ne[3];

    ggml_tensor * x = build_patch_embed(gb, pixels, p + "patch_embed.");  // {D, Np, B}
    require_dim(x, 0, d, "'" + p + "patch_embed' width");
    const int64_t n_patch  = x->ne[1];
    const int64_t n_prefix = (t.class_token ? 1 : 0) + t.reg_tokens;

    std::vector<ggml_tensor *> prefix;
    if (t.class_token) prefix.push_back(ggml_repeat_4d(ctx, gb.weight(p + "cls_token", {d, 1, 1}), d, 1, nb, 1));
    if (t.reg_tokens > 0) {
        prefix.push_back(ggml_repeat_4d(ctx, gb.weight(p + "reg_token", {d, t.reg_tokens, 1}), d, t.reg_tokens, nb, 1));
    }
    auto with_prefix = [&](ggml_tensor * cur) {
        ggml_tensor * seq = nullptr;
        for (ggml_tensor * pt : prefix) seq = seq == nullptr ? pt : ggml_concat(ctx, seq, pt, 1);
        return seq == nullptr ? cur : ggml_concat(ctx, seq, cur, 1);
    };
    if (t.no_embed_class) {
        x = ggml_add(ctx, x, gb.weight(p + "pos_embed", {d, n_patch, 1}));
        x = with_prefix(x);
    } else {
        x = with_prefix(x);
        x = ggml_add(ctx, x, gb.weight(p + "pos_embed", {d, n_patch + n_prefix, 1}));
    }
    gb.name(x, p + "embed");

    for (int64_t il = 0; il <= t.feature_block; ++il) {
        x = build_vit_block(gb, x, p + "blocks." + std::to_string(il) + ".", t.block);
    }
    // A copy even without prefix tokens, so the last block keeps its own (capturable) name.
    x = ggml_cont(ctx, ggml_view_3d(ctx, x, d, n_patch, nb, x->nb[1], x->nb[2], static_cast<size_t>(n_prefix) * x->nb[1]));
    return gb.name(x, module_name(p));
}

}  // namespace

void build_openvla_oft(graph_builder & gb) {
    const model &  m   = gb.m;
    ggml_context * ctx = gb.ctx0;
    const std::string k(K);

    const int64_t n_images   = m.get_int(k + "num_images");
    const int64_t image_size = m.get_int(k + "image_size");
    const int64_t chunk      = m.get_int(k + "num_actions_chunk");
    const int64_t action_dim = m.get_int(k + "action_dim");
    const int64_t proprio_dim = m.get_int(k + "proprio_dim", 0);
    const int64_t n_slots    = chunk * action_dim;
    if (n_images <= 0 || image_size <= 0 || chunk <= 0 || action_dim <= 0 || proprio_dim < 0) {
        fail(OMNIMODEL_ERR_FORMAT, "openvla-oft: num_images, image_size, num_actions_chunk and action_dim must be positive");
    }

    // ---- vision: both towers batched over the images
    const host_tensor * hp = gb.host_input("pixel_values");
    if (hp != nullptr && (hp->ne[0] != image_size || hp->ne[1] != image_size || hp->ne[2] != 6 * n_images ||
                          hp->ne[3] != 1)) {
        fail(OMNIMODEL_ERR_SHAPE, format("pixel_values must be (1, %lld, %lld, %lld), got numpy shape (%lld, %lld, %lld, %lld)",
                                         (long long) (6 * n_images), (long long) image_size, (long long) image_size,
                                         (long long) hp->ne[3], (long long) hp->ne[2], (long long) hp->ne[1],
                                         (long long) hp->ne[0]));
    }
    ggml_tensor * pix = gb.input("pixel_values");
    pix = ggml_reshape_4d(ctx, pix, image_size, image_size, 6, n_images);  // {W, H, 6, images}
    ggml_tensor * feats = nullptr;
    int64_t       n_patch = 0;
    const char *  tower_names[2] = {"featurizer", "fused_featurizer"};
    for (int ti = 0; ti < 2; ++ti) {
        const vit_tower t = read_tower(m, tower_names[ti]);
        if (t.patch_size <= 0 || image_size % t.patch_size != 0) {
            fail(OMNIMODEL_ERR_FORMAT, format("image size %lld is not a multiple of %s's patch size %lld",
                                              (long long) image_size, tower_names[ti], (long long) t.patch_size));
        }
        ggml_tensor * sub = ggml_view_4d(ctx, pix, image_size, image_size, 3, n_images, pix->nb[1], pix->nb[2],
                                         pix->nb[3], static_cast<size_t>(3 * ti) * pix->nb[2]);
        ggml_tensor * f = build_vit_tower(gb, ggml_cont(ctx, sub), t);  // {D_t, Np, images}
        if (feats != nullptr) require_dim(f, 1, n_patch, "fused_featurizer patches");
        n_patch = f->ne[1];
        feats   = feats == nullptr ? f : ggml_concat(ctx, feats, f, 0);
    }
    feats = ggml_reshape_2d(ctx, feats, feats->ne[0], n_patch * n_images);
    gb.name(feats, "vision_backbone");

    ggml_tensor * prefix = build_mlp(gb, feats, "projector.", {"fc1", "fc2", "fc3"}, act_kind::gelu_erf);
    const int64_t d      = prefix->ne[0];

    if (proprio_dim > 0) {
        const host_tensor * hpr = gb.host_input("proprio");
        if (hpr != nullptr && hpr->data.size() != static_cast<size_t>(proprio_dim)) {
            fail(OMNIMODEL_ERR_SHAPE, format("proprio must hold %lld values, got %zu", (long long) proprio_dim,
                                             hpr->data.size()));
        }
        ggml_tensor * pr = ggml_reshape_2d(ctx, gb.input("proprio"), proprio_dim, 1);
        pr = build_mlp(gb, pr, "proprio_projector.", {"fc1", "fc2"}, act_kind::gelu_erf);
        require_dim(pr, 0, d, "proprio_projector output width");
        prefix = ggml_concat(ctx, prefix, pr, 1);
    } else if (gb.host_input("proprio") != nullptr) {
        fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "this model has no proprio projector: do not set 'proprio'");
    }
    const int64_t n_prefix = prefix->ne[1];

    // ---- text: embeddings of the full ids, action slots zeroed
    const std::string lp    = "language_model.model.";
    ggml_tensor *     tok_e = gb.weight(lp + "embed_tokens.weight");
    require_dim(tok_e, 0, d, "embed_tokens width");
    const host_tensor * hid = gb.host_input("input_ids");
    if (hid == nullptr) fail(OMNIMODEL_ERR_NOT_FOUND, "the openvla-oft graph needs input 'input_ids', which was not set");
    const int64_t n_text = static_cast<int64_t>(hid->data.size());
    const int64_t n_prompt = n_text - n_slots - 1;  // BOS .. "▁"
    if (n_prompt < 2) {
        fail(OMNIMODEL_ERR_SHAPE, format("input_ids has %lld ids; it must be the prompt (>= 2 ids) + %lld action slots + EOS",
                                         (long long) n_text, (long long) n_slots));
    }
    ggml_tensor * ids = ggml_reshape_1d(ctx, gb.input_ids("input_ids", tok_e->ne[1]), n_text);
    ggml_tensor * te  = gb.name(ggml_get_rows(ctx, tok_e, ids), lp + "embed_tokens");  // {D, n_text}
    std::vector<float> keep(static_cast<size_t>(n_text), 1.0f);
    for (int64_t i = n_prompt; i < n_prompt + n_slots; ++i) keep[static_cast<size_t>(i)] = 0.0f;
    te = ggml_mul(ctx, te, gb.const_f32("oft.slot_keep", keep, {1, n_text}));

    const size_t  row  = te->nb[1];
    ggml_tensor * bos  = ggml_view_2d(ctx, te, d, 1, row, 0);
    ggml_tensor * rest = ggml_view_2d(ctx, te, d, n_text - 1, row, row);
    ggml_tensor * seq  = ggml_concat(ctx, ggml_concat(ctx, bos, prefix, 1), rest, 1);  // {D, S}
    const int64_t n_seq = seq->ne[1];
    gb.name(seq, "inputs_embeds");

    // ---- Llama
    llama_block_params lh;
    lh.n_embd     = d;
    lh.n_head     = m.get_int(k + "llm.head_count");
    lh.n_head_kv  = m.get_int(k + "llm.head_count_kv", lh.n_head);
    lh.n_ff       = m.get_int(k + "llm.feed_forward_length");
    lh.eps        = static_cast<float>(m.get_float(k + "llm.rms_norm_eps", 1e-6));
    lh.rope_theta = static_cast<float>(m.get_float(k + "llm.rope_theta", 10000.0));
    lh.causal     = m.get_int(k + "causal_attention", 0) != 0;
    const int64_t n_layer = m.get_int(k + "llm.block_count");
    if (m.get_int(k + "llm.embedding_length", d) != d) {
        fail(OMNIMODEL_ERR_FORMAT, "openvla-oft.llm.embedding_length disagrees with the projector's output width");
    }
    std::vector<int32_t> pos(static_cast<size_t>(n_seq));
    for (int64_t i = 0; i < n_seq; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    ggml_tensor * positions = gb.const_i32("oft.positions", pos);
    ggml_tensor * x = seq;
    for (int64_t il = 0; il < n_layer; ++il) {
        x = build_llama_block(gb, x, positions, lp + "layers." + std::to_string(il) + ".", lh);
    }
    x = gb.build_norm(x, gb.weight(lp + "norm.weight", {d}), nullptr, norm_kind::rms, lh.eps);
    gb.name(x, lp + "norm");

    // ---- action head: the row before each action slot
    const int64_t start = n_prefix + n_prompt - 1;
    ggml_tensor * ah = ggml_cont(ctx, ggml_view_2d(ctx, x, d, n_slots, x->nb[1], static_cast<size_t>(start) * x->nb[1]));
    gb.name(ah, "action_hidden_states");
    ah = ggml_reshape_2d(ctx, ah, d * action_dim, chunk);
    ggml_tensor * act = build_mlp_resnet(gb, ah, "action_head.model.", m.get_int(k + "action_head.num_blocks", 2),
                                         static_cast<float>(m.get_float(k + "action_head.layer_norm_eps", 1e-5)));
    require_dim(act, 0, action_dim, "action head output");
    gb.name(act, "action_head");
    gb.output(act, "normalized_actions");

    // ---- un-normalisation: a = mask ? 0.5 (x + 1) (high - low + 1e-8) + low : x  (float32 here)
    const std::string sp = k + "norm_stats.action.";
    if (m.has(sp + "low") && m.has(sp + "high")) {
        const std::vector<float> low  = m.get_float_array(sp + "low");
        const std::vector<float> high = m.get_float_array(sp + "high");
        std::vector<float>       mask(low.size(), 1.0f);
        if (m.has(sp + "mask")) mask = m.get_float_array(sp + "mask");
        if (low.size() != static_cast<size_t>(action_dim) || high.size() != low.size() || mask.size() != low.size()) {
            fail(OMNIMODEL_ERR_FORMAT, format("%s{low,high,mask} must hold %lld values each", sp.c_str(),
                                              (long long) action_dim));
        }
        std::vector<float> scale(low.size()), offset(low.size());
        for (size_t i = 0; i < low.size(); ++i) {
            const double s = 0.5 * (static_cast<double>(high[i]) - low[i] + 1e-8);
            scale[i]  = mask[i] != 0 ? static_cast<float>(s) : 1.0f;
            offset[i] = mask[i] != 0 ? static_cast<float>(s + low[i]) : 0.0f;
        }
        ggml_tensor * a = ggml_mul(ctx, act, gb.const_f32("oft.action_scale", scale, {action_dim}));
        a = ggml_add(ctx, a, gb.const_f32("oft.action_offset", offset, {action_dim}));
        gb.output(a, "actions");
    }
}

}  // namespace omni
