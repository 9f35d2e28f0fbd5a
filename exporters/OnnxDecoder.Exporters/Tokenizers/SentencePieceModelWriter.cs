using System.Text;
using Google.Protobuf;
using OnnxDecoder.Exporters.Llama2c;

namespace OnnxDecoder.Exporters.Tokenizers;

/// <summary>
/// Writes a SentencePiece model file (sentencepiece_model.proto, BPE) from a llama2.c vocabulary,
/// so Microsoft.ML.Tokenizers' SentencePieceTokenizer runs it. Field numbers are those of the
/// SentencePiece format: ModelProto.pieces 1, trainer_spec 2, normalizer_spec 3; SentencePiece
/// piece 1, score 2, type 3; TrainerSpec model_type 3, vocab_size 4, byte_fallback 35, unk_id 40,
/// bos_id 41, eos_id 42, pad_id 43; NormalizerSpec name 1, add_dummy_prefix 3,
/// remove_extra_whitespaces 4, escape_whitespaces 5.
/// <para>llama2.c keeps spaces as ' ' in its pieces and adds a dummy-prefix space, merges by the
/// highest score, and falls back to &lt;0xNN&gt; byte tokens: the same algorithm with whitespace
/// escaping off and runs of spaces kept.</para>
/// </summary>
public static class SentencePieceModelWriter
{
    private enum PieceType { Normal = 1, Unknown = 2, Control = 3, Unused = 5, Byte = 6 }

    public static void Write(Llama2cTokenizer tokenizer, Stream destination)
    {
        var output = new CodedOutputStream(destination, leaveOpen: true);
        var utf8 = new UTF8Encoding(false, throwOnInvalidBytes: true);
        for (int id = 0; id < tokenizer.Pieces.Count; id++)
        {
            byte[] raw = tokenizer.Pieces[id];
            string piece;
            PieceType type;
            if (id == 0) (piece, type) = ("<unk>", PieceType.Unknown);
            else if (id == 1) (piece, type) = ("<s>", PieceType.Control);
            else if (id == 2) (piece, type) = ("</s>", PieceType.Control);
            else if (raw.Length == 6 && raw[0] == '<' && raw[1] == '0' && raw[2] == 'x' && raw[5] == '>') (piece, type) = (Encoding.ASCII.GetString(raw), PieceType.Byte);
            else
            {
                try
                {
                    (piece, type) = (utf8.GetString(raw), PieceType.Normal);
                }
                catch (DecoderFallbackException)
                {
                    // A piece that is not UTF-8 text can never be produced from text: keep its id, unused.
                    (piece, type) = ($"<unused_{id}>", PieceType.Unused);
                }
            }
            var message = new MemoryStream();
            var inner = new CodedOutputStream(message, leaveOpen: true);
            inner.WriteTag(1, WireFormat.WireType.LengthDelimited); inner.WriteString(piece);
            inner.WriteTag(2, WireFormat.WireType.Fixed32); inner.WriteFloat(tokenizer.Scores[id]);
            inner.WriteTag(3, WireFormat.WireType.Varint); inner.WriteEnum((int)type);
            inner.Flush();
            output.WriteTag(1, WireFormat.WireType.LengthDelimited);
            output.WriteBytes(ByteString.CopyFrom(message.ToArray()));
        }

        var trainer = new MemoryStream();
        var t = new CodedOutputStream(trainer, leaveOpen: true);
        t.WriteTag(3, WireFormat.WireType.Varint); t.WriteEnum(2);                  // model_type = BPE
        t.WriteTag(4, WireFormat.WireType.Varint); t.WriteInt32(tokenizer.Pieces.Count);
        t.WriteTag(35, WireFormat.WireType.Varint); t.WriteBool(true);             // byte_fallback
        t.WriteTag(40, WireFormat.WireType.Varint); t.WriteInt32(0);               // unk_id
        t.WriteTag(41, WireFormat.WireType.Varint); t.WriteInt32(1);               // bos_id
        t.WriteTag(42, WireFormat.WireType.Varint); t.WriteInt32(2);               // eos_id
        t.WriteTag(43, WireFormat.WireType.Varint); t.WriteInt32(-1);              // pad_id: none
        t.Flush();
        output.WriteTag(2, WireFormat.WireType.LengthDelimited);
        output.WriteBytes(ByteString.CopyFrom(trainer.ToArray()));

        var normalizer = new MemoryStream();
        var n = new CodedOutputStream(normalizer, leaveOpen: true);
        n.WriteTag(1, WireFormat.WireType.LengthDelimited); n.WriteString("identity");
        n.WriteTag(3, WireFormat.WireType.Varint); n.WriteBool(true);              // add_dummy_prefix
        n.WriteTag(4, WireFormat.WireType.Varint); n.WriteBool(false);             // remove_extra_whitespaces
        n.WriteTag(5, WireFormat.WireType.Varint); n.WriteBool(false);             // escape_whitespaces
        n.Flush();
        output.WriteTag(3, WireFormat.WireType.LengthDelimited);
        output.WriteBytes(ByteString.CopyFrom(normalizer.ToArray()));
        output.Flush();
    }
}
