using System.Buffers.Binary;
using OnnxDecoder.Exporters.Gguf;

namespace OnnxDecoder.Exporters.Tests;

/// <summary>ggml block formats against plain loops written from the block layouts.</summary>
public class DequantizeTests
{
    private static byte[] Half(float v) { var b = new byte[2]; BinaryPrimitives.WriteUInt16LittleEndian(b, BitConverter.HalfToUInt16Bits((Half)v)); return b; }

    [Test]
    public void Q8_0_round_trips_within_half_a_step()
    {
        var random = new Random(1);
        var values = Enumerable.Range(0, 32).Select(_ => (float)(random.NextDouble() * 4 - 2)).ToArray();
        var block = GgufTestWriter.QuantizeQ8(values);
        var output = new float[32];
        GgmlDequantize.Block(GgmlType.Q8_0, block, output);
        float step = values.Max(Math.Abs) / 127;
        for (int i = 0; i < 32; i++) Assert.That(output[i], Is.EqualTo(values[i]).Within(step * 0.51f + 1e-3f));
    }

    [Test]
    public void Q4_0_low_nibbles_are_the_first_half_and_eight_is_zero()
    {
        var block = new byte[18];
        Half(0.5f).CopyTo(block, 0);
        for (int j = 0; j < 16; j++) block[2 + j] = (byte)(j | ((15 - j) << 4));
        var output = new float[32];
        GgmlDequantize.Block(GgmlType.Q4_0, block, output);
        for (int j = 0; j < 16; j++)
        {
            Assert.That(output[j], Is.EqualTo(0.5f * (j - 8)));
            Assert.That(output[j + 16], Is.EqualTo(0.5f * (15 - j - 8)));
        }
    }

    [Test]
    public void Q4_K_uses_six_bit_scales_and_mins_per_sub_block()
    {
        var block = new byte[144];
        Half(2f).CopyTo(block, 0);      // d
        Half(0.5f).CopyTo(block, 2);    // dmin
        // Sub-blocks 0-3: scale in scales[j] & 63, min in scales[j + 4] & 63.
        // Sub-blocks 4-7: scale = (scales[j + 4] & 15) | (scales[j - 4] >> 6) << 4, min = (scales[j + 4] >> 4) | (scales[j] >> 6) << 4.
        int[] scale = [1, 2, 3, 4, 17, 33, 49, 63], min = [5, 6, 7, 8, 16, 32, 48, 1];
        var s = block.AsSpan(4, 12);
        for (int j = 0; j < 4; j++)
        {
            s[j] = (byte)(scale[j] | (scale[j + 4] >> 4) << 6);
            s[j + 4] = (byte)(min[j] | (min[j + 4] >> 4) << 6);
            s[j + 8] = (byte)((scale[j + 4] & 15) | (min[j + 4] & 15) << 4);
        }
        for (int i = 0; i < 128; i++) block[16 + i] = (byte)((i % 16) | (15 - i % 16) << 4);
        var output = new float[256];
        GgmlDequantize.Block(GgmlType.Q4_K, block, output);
        // Chunk c (64 values) holds sub-block 2c (low nibbles of qs[32c..32c+31]) then 2c+1 (high nibbles).
        for (int sub = 0; sub < 8; sub++)
            for (int l = 0; l < 32; l++)
            {
                int q = block[16 + (sub / 2) * 32 + l];
                int nibble = sub % 2 == 0 ? q & 15 : q >> 4;
                Assert.That(output[sub * 32 + l], Is.EqualTo(2f * scale[sub] * nibble - 0.5f * min[sub]).Within(1e-5f), $"sub-block {sub}, element {l}");
            }
    }

    [Test]
    public void Q6_K_combines_low_and_high_bits_with_signed_scales()
    {
        var block = new byte[210];
        var random = new Random(4);
        var quants = Enumerable.Range(0, 256).Select(_ => random.Next(64)).ToArray(); // 6-bit values, 32 is zero
        sbyte[] scales = Enumerable.Range(0, 16).Select(i => (sbyte)(i % 2 == 0 ? i + 1 : -(i + 1))).ToArray();
        // Element index y in half n (128 each), position l in 0..31, quarter k in 0..3: y = 128n + 32k + l.
        // Low 4 bits: ql[64n + l + 32(k % 2)], high nibble for k >= 2; high 2 bits: qh[32n + l] >> 2k.
        for (int n = 0; n < 2; n++)
            for (int k = 0; k < 4; k++)
                for (int l = 0; l < 32; l++)
                {
                    int q = quants[128 * n + 32 * k + l];
                    int qlIndex = 64 * n + l + 32 * (k % 2);
                    block[qlIndex] |= (byte)(k < 2 ? q & 15 : (q & 15) << 4);
                    block[128 + 32 * n + l] |= (byte)((q >> 4) << (2 * k));
                }
        for (int i = 0; i < 16; i++) block[192 + i] = (byte)scales[i];
        Half(0.25f).CopyTo(block, 208);
        var output = new float[256];
        GgmlDequantize.Block(GgmlType.Q6_K, block, output);
        for (int y = 0; y < 256; y++)
        {
            int scaleIndex = y / 16; // 16 sub-blocks of 16 values, in order
            Assert.That(output[y], Is.EqualTo(0.25f * scales[scaleIndex] * (quants[y] - 32)).Within(1e-5f), $"element {y}");
        }
    }

    [Test]
    public void F16_and_BF16_widen_exactly()
    {
        var output = new float[1];
        GgmlDequantize.Block(GgmlType.F16, Half(-1.5f), output);
        Assert.That(output[0], Is.EqualTo(-1.5f));
        GgmlDequantize.Block(GgmlType.BF16, [0x80, 0x3f], output); // bfloat16 0x3f80 = 1.0
        Assert.That(output[0], Is.EqualTo(1f));
    }
}
