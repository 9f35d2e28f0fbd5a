namespace OnnxDecoder.Modeling.Quantization;

/// <summary>How weights are quantized: bits, block size along the input dimension, symmetry.</summary>
public sealed record QuantizationOptions
{
    /// <summary>4 or 8.</summary>
    public int Bits { get; init; } = 4;
    /// <summary>Elements of K that share one scale (and zero point): 32, 64 or 128.</summary>
    public int BlockSize { get; init; } = 32;
    /// <summary>Symmetric: zero point fixed at 2^(bits-1). Asymmetric: a zero point per block.</summary>
    public bool Symmetric { get; init; } = true;
    /// <summary>MatMulNBits accuracy_level: 0 unset (fp32 compute), 1 fp32, 2 fp16, 3 bf16, 4 int8 activations.</summary>
    public int AccuracyLevel { get; init; }
    /// <summary>
    /// Keep the token embedding quantized too (ort lowering, GatherBlockQuantized; a tied LM head
    /// shares the copy). Null: yes for int4, where the float table would be most of the model's
    /// bytes; no for int8, whose float table keeps greedy output closest to fp32.
    /// </summary>
    public bool? QuantizeEmbedding { get; init; }
    public bool EmbeddingQuantized => QuantizeEmbedding ?? Bits == 4;

    public QuantizationOptions Validate()
    {
        if (Bits is not (4 or 8)) throw new ArgumentOutOfRangeException(nameof(Bits), Bits, "quantization bits must be 4 or 8");
        if (BlockSize is not (32 or 64 or 128)) throw new ArgumentOutOfRangeException(nameof(BlockSize), BlockSize, "block size must be 32, 64 or 128");
        if (AccuracyLevel is < 0 or > 4) throw new ArgumentOutOfRangeException(nameof(AccuracyLevel), AccuracyLevel, "accuracy level must be 0 to 4");
        return this;
    }
}

/// <summary>A weight W [N, K] quantized per block along K, laid out as MatMulNBits reads it.</summary>
/// <param name="Packed">[N, blocks, BlockSize x Bits / 8] bytes; 4-bit values two per byte, the lower index in the low nibble.</param>
/// <param name="Scales">[N x blocks] float32.</param>
/// <param name="ZeroPoints">Asymmetric only: 8-bit one per block [N x blocks]; 4-bit packed per row, [N x ceil(blocks / 2)].</param>
public sealed record QuantizedWeight(int N, int K, int Bits, int BlockSize, byte[] Packed, float[] Scales, byte[]? ZeroPoints)
{
    public int Blocks => (K + BlockSize - 1) / BlockSize;
    public int BlobBytes => BlockSize * Bits / 8;

    /// <summary>The unsigned quantized value of W[n, k] (k may run into the zero padding).</summary>
    public int Quant(int n, int k)
    {
        int index = (n * Blocks + k / BlockSize) * BlobBytes + (k % BlockSize) * Bits / 8;
        return Bits == 8 ? Packed[index] : (k % 2 == 0 ? Packed[index] & 0xF : Packed[index] >> 4);
    }

    public int ZeroPoint(int n, int block)
    {
        if (ZeroPoints is null) return 1 << (Bits - 1);
        if (Bits == 8) return ZeroPoints[n * Blocks + block];
        byte packed = ZeroPoints[n * ((Blocks + 1) / 2) + block / 2];
        return block % 2 == 0 ? packed & 0xF : packed >> 4;
    }

    /// <summary>W as the quantized graph sees it: scale x (q - zero point), [N, K].</summary>
    public float[] Dequantize()
    {
        var w = new float[(long)N * K];
        for (int n = 0; n < N; n++)
            for (int k = 0; k < K; k++)
                w[(long)n * K + k] = Scales[n * Blocks + k / BlockSize] * (Quant(n, k) - ZeroPoint(n, k / BlockSize));
        return w;
    }
}

/// <summary>
/// Round-to-nearest block quantization, one tensor at a time. Symmetric 8-bit: scale = max|w| / 127
/// (ggml Q8_0's rule; -128 is never used); symmetric 4-bit: scale = -m / 8 with m the element of
/// largest magnitude (ggml Q4_0's rule: 16 levels, a finer step than max|w| / 7; zero stays exact
/// either way); asymmetric: the block's [min, max] (widened to
/// hold 0) maps onto [0, 2^b - 1] with a rounded zero point. A K that the block size does not divide
/// gets a last block padded with the zero point.
/// </summary>
public static class BlockQuantizer
{
    public static QuantizedWeight Quantize(ReadOnlySpan<float> weight, int n, int k, QuantizationOptions options)
    {
        options.Validate();
        if (weight.Length != (long)n * k) throw new ArgumentException($"{weight.Length} values do not fill [{n}, {k}]");
        int bits = options.Bits, bs = options.BlockSize, blocks = (k + bs - 1) / bs, blob = bs * bits / 8;
        int levels = (1 << bits) - 1, half = 1 << (bits - 1);
        var packed = new byte[(long)n * blocks * blob];
        var scales = new float[n * blocks];
        byte[]? zeroPoints = options.Symmetric ? null : new byte[bits == 8 ? n * blocks : n * ((blocks + 1) / 2)];
        Span<int> quants = stackalloc int[bs];
        for (int row = 0; row < n; row++)
            for (int b = 0; b < blocks; b++)
            {
                var block = weight.Slice(row * k + b * bs, Math.Min(bs, k - b * bs));
                float scale;
                int zero;
                if (options.Symmetric && bits == 4)
                {
                    // ggml Q4_0's rule: the element of largest magnitude maps exactly to level 0 (-8 steps), so all
                    // 16 levels are used and the step is max/8 rather than max/7; the other side clamps at +7 steps.
                    // The scale is negative when that element is positive.
                    float extreme = 0;
                    foreach (var v in block) if (Math.Abs(v) > Math.Abs(extreme)) extreme = v;
                    scale = extreme / -half;
                    zero = half;
                }
                else if (options.Symmetric)
                {
                    float max = 0;
                    foreach (var v in block) max = Math.Max(max, Math.Abs(v));
                    scale = max / (half - 1);
                    zero = half;
                }
                else
                {
                    float min = 0, max = 0;
                    foreach (var v in block) { min = Math.Min(min, v); max = Math.Max(max, v); }
                    scale = (max - min) / levels;
                    zero = scale == 0 ? 0 : Math.Clamp((int)MathF.Round(-min / scale), 0, levels);
                }
                scales[row * blocks + b] = scale;
                float inverse = scale == 0 ? 0 : 1 / scale;
                for (int i = 0; i < bs; i++)
                    quants[i] = i < block.Length ? Math.Clamp((int)MathF.Round(block[i] * inverse) + zero, 0, levels) : zero;

                int at = (row * blocks + b) * blob;
                if (bits == 8) for (int i = 0; i < bs; i++) packed[at + i] = (byte)quants[i];
                else for (int i = 0; i < bs; i += 2) packed[at + i / 2] = (byte)(quants[i] | quants[i + 1] << 4);
                if (zeroPoints is not null)
                {
                    if (bits == 8) zeroPoints[row * blocks + b] = (byte)zero;
                    else zeroPoints[row * ((blocks + 1) / 2) + b / 2] |= (byte)(b % 2 == 0 ? zero : zero << 4);
                }
            }
        return new QuantizedWeight(n, k, bits, bs, packed, scales, zeroPoints);
    }
}
