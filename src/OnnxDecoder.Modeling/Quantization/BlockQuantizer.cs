namespace OnnxDecoder.Modeling.Quantization;

/// <summary>How weights are quantized: bits, block size along the input dimension, symmetry.</summary>
public sealed record QuantizationOptions
{
    /// <summary>4 or 8.</summary>
    public int Bits { get; init; } = 4;
    /// <summary>Elements of K that share one scale (and zero point): 32, 64 or 128 (see <see cref="ForWidth"/>).</summary>
    public int BlockSize { get; init; } = DefaultBlockSize;
    /// <summary>
    /// Per block, search the scale (and zero point) of least squared reconstruction error, never worse than the
    /// plain rule; off: the plain round-to-nearest rule from the block's range (ggml's Q4_0 / Q8_0 when symmetric).
    /// </summary>
    public bool SearchScales { get; init; } = true;
    /// <summary>Symmetric: zero point fixed at 2^(bits-1). Asymmetric: a zero point per block.</summary>
    public bool Symmetric { get; init; } = true;
    /// <summary>
    /// 8-bit with the ort lowering: com.microsoft DynamicQuantizeMatMul instead of MatMulNBits: int8 weights with one
    /// symmetric scale per output (no blocks), activations quantized to uint8 per call; float32 activations only.
    /// </summary>
    public bool DynamicQuantizeMatMul { get; init; }
    /// <summary>MatMulNBits accuracy_level: 0 unset (fp32 compute), 1 fp32, 2 fp16, 3 bf16, 4 int8 activations.</summary>
    public int AccuracyLevel { get; init; }
    /// <summary>
    /// Keep the token embedding quantized too (ort lowering, GatherBlockQuantized; a tied LM head
    /// shares the copy). Null: yes for int4, where the float table would be most of the model's
    /// bytes; no for int8, whose float table keeps greedy output closest to fp32.
    /// </summary>
    public bool? QuantizeEmbedding { get; init; }
    public bool EmbeddingQuantized => QuantizeEmbedding ?? Bits == 4;

    /// <summary>The export's default block size (both bit widths): see README's quantization section for the measurements.</summary>
    public const int DefaultBlockSize = 32;

    /// <summary>The smallest block size: a weight whose input width is not a multiple of it stays float.</summary>
    public const int MinimumBlockSize = 32;

    /// <summary>
    /// The options one weight of input width <paramref name="k"/> is quantized with: the block size, or the largest
    /// smaller one (64, 32) that divides k, so that no block is padded; null when 32 does not divide k either, and the
    /// weight stays float (llama.cpp's rule for rows that are not a whole number of blocks).
    /// </summary>
    public QuantizationOptions? ForWidth(long k)
    {
        for (int block = BlockSize; block >= MinimumBlockSize; block /= 2)
            if (k % block == 0) return block == BlockSize ? this : this with { BlockSize = block };
        return null;
    }

    /// <summary>The export's quantization metadata (and summary line): the form, and the weights left float.</summary>
    public string Describe(IReadOnlyList<(string Name, long N, long K)>? floatWeights = null)
    {
        if (DynamicQuantizeMatMul) return $"bits 8, per output column (DynamicQuantizeMatMul), {(SearchScales ? "least-error scales" : "round-to-nearest scales")}";
        string form = $"bits {Bits}, block {BlockSize}, {(Symmetric ? "symmetric" : "asymmetric")}, accuracy level {AccuracyLevel}, " +
            $"{(SearchScales ? "least-error scales" : "round-to-nearest scales")}";
        if (floatWeights is not { Count: > 0 }) return form;
        return form + $"; kept float (input width not a multiple of {MinimumBlockSize}): " +
            string.Join(", ", floatWeights.Select(w => $"{w.Name} [{w.N}, {w.K}]"));
    }

    public QuantizationOptions Validate()
    {
        if (Bits is not (4 or 8)) throw new ArgumentOutOfRangeException(nameof(Bits), Bits, "quantization bits must be 4 or 8");
        if (BlockSize is not (32 or 64 or 128)) throw new ArgumentOutOfRangeException(nameof(BlockSize), BlockSize, "block size must be 32, 64 or 128");
        if (DynamicQuantizeMatMul && (Bits != 8 || !Symmetric))
            throw new ArgumentException("DynamicQuantizeMatMul takes symmetric 8-bit weights: use bits 8 without zero points", nameof(DynamicQuantizeMatMul));
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
/// Block quantization, one tensor at a time: each block of K gets the scale (and zero point) of least squared
/// reconstruction error (<see cref="BlockScaleSearch"/>), or with <see cref="QuantizationOptions.SearchScales"/>
/// off the plain round-to-nearest rule from its range. A K that the block size does not divide gets a last block
/// padded with the zero point (the exporter keeps such weights float instead; see <see cref="QuantizationOptions.ForWidth"/>).
/// Rows are independent, so they are quantized in parallel; the result does not depend on the thread count.
/// </summary>
public static class BlockQuantizer
{
    public static QuantizedWeight Quantize(ReadOnlySpan<float> weight, int n, int k, QuantizationOptions options)
    {
        options.Validate();
        if (weight.Length != (long)n * k) throw new ArgumentException($"{weight.Length} values do not fill [{n}, {k}]");
        int bits = options.Bits, bs = options.BlockSize, blocks = (k + bs - 1) / bs, blob = bs * bits / 8;
        var packed = new byte[(long)n * blocks * blob];
        var scales = new float[n * blocks];
        var zeros = new int[n * blocks];
        var source = weight.ToArray();
        Parallel.For(0, n, () => new int[3 * bs], (row, state, scratch) =>
        {
            var quants = scratch.AsSpan(0, bs);
            for (int b = 0; b < blocks; b++)
            {
                var block = source.AsSpan(row * k + b * bs, Math.Min(bs, k - b * bs));
                var q = quants[..block.Length];
                int zero;
                _ = options.SearchScales
                    ? BlockScaleSearch.Search(block, bits, options.Symmetric, q, scratch.AsSpan(bs, block.Length), scratch.AsSpan(2 * bs, block.Length),
                        out scales[row * blocks + b], out zero)
                    : BlockScaleSearch.Plain(block, bits, options.Symmetric, q, out scales[row * blocks + b], out zero);
                zeros[row * blocks + b] = zero;
                quants[block.Length..].Fill(zero);
                long at = ((long)row * blocks + b) * blob;
                if (bits == 8) for (int i = 0; i < bs; i++) packed[at + i] = (byte)quants[i];
                else for (int i = 0; i < bs; i += 2) packed[at + i / 2] = (byte)(quants[i] | quants[i + 1] << 4);
            }
            return scratch;
        }, _ => { });
        byte[]? zeroPoints = null;
        if (!options.Symmetric)
        {
            zeroPoints = new byte[bits == 8 ? n * blocks : n * ((blocks + 1) / 2)];
            for (int row = 0; row < n; row++)
                for (int b = 0; b < blocks; b++)
                {
                    int zero = zeros[row * blocks + b];
                    if (bits == 8) zeroPoints[row * blocks + b] = (byte)zero;
                    else zeroPoints[row * ((blocks + 1) / 2) + b / 2] |= (byte)(b % 2 == 0 ? zero : zero << 4);
                }
        }
        return new QuantizedWeight(n, k, bits, bs, packed, scales, zeroPoints);
    }
}
