// From a question and images to the engine's PromptInput, as HF's LlavaProcessor does it: the prompt text
// (LLaVA-1.5's "USER: <image>\n{q} ASSISTANT:", the Vicuna-v1 system-prompt form, or the model's own chat
// template) is tokenized with the model's tokenizer, and each "<image>" token is expanded to the vision
// tower's token count (image_seq_length), which is what the processor's "<image>" * N expansion yields.
using VteKernels.Imaging;
using VteKernels.Models;
using VteKernels.Text;

namespace VteKernels.Engine;

/// <summary>Builds multimodal prompts for LLaVA models.</summary>
public static class MultimodalPrompt
{
    /// <summary>
    /// The model's chat template, where HF keeps it: the processor's chat_template.jinja or chat_template.json
    /// in <paramref name="modelDir"/> (what LlavaProcessor.apply_chat_template uses), else the tokenizer's
    /// (tokenizer_config.json). Null when there is none.
    /// </summary>
    /// <exception cref="ModelFormatException">chat_template.json is not JSON or has no "chat_template" string.</exception>
    public static string? FindChatTemplate(string? modelDir, Tokenizer tokenizer)
    {
        if (modelDir is not null)
        {
            var jinja = Path.Combine(modelDir, "chat_template.jinja");
            if (File.Exists(jinja)) return File.ReadAllText(jinja);
            var json = Path.Combine(modelDir, "chat_template.json");
            if (File.Exists(json))
            {
                try
                {
                    using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(json));
                    if (doc.RootElement.ValueKind == System.Text.Json.JsonValueKind.Object &&
                        doc.RootElement.TryGetProperty("chat_template", out var t) && t.ValueKind == System.Text.Json.JsonValueKind.String)
                        return t.GetString();
                    throw new ModelFormatException(json, null, "expected an object with a \"chat_template\" string");
                }
                catch (System.Text.Json.JsonException e)
                {
                    throw new ModelFormatException(json, null, $"not valid JSON: {e.Message}", e);
                }
            }
        }
        return tokenizer.ChatTemplate;
    }

    /// <summary>
    /// Renders the conversation <paramref name="turns"/> (the last one unanswered) in <paramref name="style"/>,
    /// with <paramref name="imageCount"/> images in the first user turn. The template style reads the chat
    /// template from <paramref name="modelDir"/> as <see cref="FindChatTemplate"/> does.
    /// </summary>
    /// <exception cref="InvalidInputException">The template style is asked for but the model has no chat template.</exception>
    public static (string Text, bool AddSpecialTokens) Render(PromptStyle style, Tokenizer tokenizer,
        IReadOnlyList<(string User, string? Assistant)> turns, int imageCount, string? modelDir = null)
    {
        if (style != PromptStyle.Template)
            return (style == PromptStyle.VicunaV1 ? PromptFormat.VicunaV1(turns, imageCount) : PromptFormat.Llava15(turns, imageCount), true);
        if (FindChatTemplate(modelDir, tokenizer) is not string source)
            throw new InvalidInputException("the model has no chat template (chat_template.jinja, chat_template.json or tokenizer_config.json); use the llava or vicuna prompt style");
        var messages = new List<ChatMessage>();
        for (int i = 0; i < turns.Count; i++)
        {
            messages.Add(new ChatMessage("user", turns[i].User, i == 0 ? imageCount : 0));
            if (turns[i].Assistant is string a) messages.Add(new ChatMessage("assistant", a));
        }
        var text = ChatTemplate.Parse(source).Render(messages, addGenerationPrompt: true,
            new Dictionary<string, object?> { ["bos_token"] = tokenizer.BosToken ?? "", ["eos_token"] = tokenizer.EosToken ?? "" });
        // HF's LLaVA flow tokenizes the rendered text with the processor, special tokens included (llava-hf's
        // template writes no BOS, so the tokenizer adds it); a template that writes BOS itself must not get a second one.
        bool templateWroteBos = tokenizer.BosToken is { Length: > 0 } bos && text.StartsWith(bos, StringComparison.Ordinal);
        return (text, !templateWroteBos);
    }

    /// <summary>
    /// Tokenizes <paramref name="text"/> and expands each image placeholder token to
    /// <see cref="LlavaConfig.TokensPerImage"/> copies; the placeholders must match <paramref name="images"/> one to one.
    /// </summary>
    /// <exception cref="InvalidInputException">The tokenizer does not know the model's image token, or placeholders and images disagree.</exception>
    public static PromptInput Build(LlavaConfig config, Tokenizer tokenizer, string text, IReadOnlyList<ImageInput> images, bool addSpecialTokens = true)
    {
        // llava-hf: "<image>" is a token of the tokenizer with the model's image id. The original layout (a
        // tokenizer.model without it): LLaVA's tokenizer_image_token splits the text at "<image>" instead.
        bool split = tokenizer.IsSentencePieceModel && tokenizer.TokenToId(ImagePlaceholder) != config.ImageTokenIndex;
        var placeholder = split ? ImagePlaceholder : tokenizer.IdToToken(config.ImageTokenIndex)
            ?? throw new InvalidInputException($"the tokenizer has no token for the model's image token id {config.ImageTokenIndex}");
        var ids = split ? TokenizerImageToken(tokenizer, text, config.ImageTokenIndex, addSpecialTokens) : tokenizer.Encode(text, addSpecialTokens);
        int count = ids.Count(id => id == config.ImageTokenIndex);
        if (count != images.Count)
            throw new InvalidInputException($"the prompt has {count} image placeholder(s) ({placeholder}) but {images.Count} image(s) were given");
        var expanded = new List<int>(ids.Length + count * config.TokensPerImage);
        foreach (var id in ids)
        {
            if (id == config.ImageTokenIndex) expanded.AddRange(Enumerable.Repeat(id, config.TokensPerImage));
            else expanded.Add(id);
        }
        return new PromptInput([.. expanded], images);
    }

    /// <summary>The placeholder text of an image in a prompt.</summary>
    public const string ImagePlaceholder = "<image>";

    /// <summary>
    /// LLaVA's tokenizer_image_token (the original layout, whose tokenizer has no image token): the text is split at
    /// "&lt;image&gt;", each piece tokenized on its own (BOS included), the first piece's BOS kept once and the others'
    /// dropped, and <paramref name="imageToken"/> put between the pieces.
    /// </summary>
    public static int[] TokenizerImageToken(Tokenizer tokenizer, string text, int imageToken, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(text);
        var chunks = text.Split(ImagePlaceholder).Select(c => tokenizer.Encode(c, addSpecialTokens)).ToList();
        var ids = new List<int>();
        int offset = 0;
        if (chunks[0].Length > 0 && tokenizer.BosId is int bos && chunks[0][0] == bos)
        {
            offset = 1;
            ids.Add(bos);
        }
        for (int k = 0; k < chunks.Count; k++)
        {
            if (k > 0) ids.Add(imageToken);
            ids.AddRange(chunks[k].Skip(offset));
        }
        return [.. ids];
    }

    /// <summary>
    /// The preprocessing options of a model directory: its preprocessor_config.json when present (else CLIP's
    /// defaults at the vision tower's size), with LLaVA-1.5's pad-to-square when <paramref name="pad"/>; null
    /// takes the model's own choice (<see cref="PadsToSquare"/>).
    /// </summary>
    /// <exception cref="ModelConfigException">With <paramref name="pad"/> null: config.json cannot be read.</exception>
    public static ClipOptions PreprocessingFor(string modelDir, LlavaConfig config, bool? pad)
    {
        pad ??= PadsToSquare(modelDir);
        var path = Path.Combine(modelDir, "preprocessor_config.json");
        int size = config.Vision.ImageSize;
        var o = File.Exists(path) ? ClipOptions.FromPreprocessorConfig(path)
            : ClipOptions.Clip336 with { ShortestEdge = size, CropHeight = size, CropWidth = size };
        return o with { PadToSquare = pad.Value };
    }

    /// <summary>
    /// Whether the model pads images to a square first by default: an original-layout config.json that says
    /// image_aspect_ratio "pad" (as LLaVA-1.5's does, and its own code then pads); llava-hf configs never do.
    /// </summary>
    /// <exception cref="ModelConfigException">config.json cannot be read or is not a JSON object.</exception>
    public static bool PadsToSquare(string modelDir)
    {
        var path = Path.Combine(modelDir, LlavaCheckpoint.ConfigFileName);
        var root = LlavaConfig.ParseObject(LlavaConfig.ReadText(path), path);
        return OriginalLayoutSettings.Describes(root) && LlavaConfig.ReadOriginalLayoutSettings(root, path).PadToSquare;
    }

    /// <summary>Decodes and preprocesses an image file for <paramref name="config"/>'s vision tower.</summary>
    /// <exception cref="InvalidInputException">The preprocessed size does not match the vision tower.</exception>
    public static ImageInput LoadImage(string path, ClipOptions options, LlavaConfig config)
    {
        var input = ClipPreprocessor.ToImageInput(ImageDecoder.Load(path), options);
        if (input.Height != config.Vision.ImageSize || input.Width != config.Vision.ImageSize)
            throw new InvalidInputException($"{Path.GetFileName(path)} preprocesses to {input.Width}x{input.Height} but the vision tower takes {config.Vision.ImageSize}x{config.Vision.ImageSize} (check preprocessor_config.json)");
        return input;
    }
}
