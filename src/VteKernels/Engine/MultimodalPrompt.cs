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
    /// Renders the conversation <paramref name="turns"/> (the last one unanswered) in <paramref name="style"/>,
    /// with <paramref name="imageCount"/> images in the first user turn.
    /// </summary>
    /// <exception cref="InvalidInputException">The template style is asked for but the tokenizer has no chat template.</exception>
    public static (string Text, bool AddSpecialTokens) Render(PromptStyle style, Tokenizer tokenizer,
        IReadOnlyList<(string User, string? Assistant)> turns, int imageCount)
    {
        if (style != PromptStyle.Template)
            return (style == PromptStyle.VicunaV1 ? PromptFormat.VicunaV1(turns, imageCount) : PromptFormat.Llava15(turns, imageCount), true);
        if (tokenizer.ChatTemplate is not string source)
            throw new InvalidInputException("the model's tokenizer_config.json has no chat_template; use the llava or vicuna prompt style");
        var messages = new List<ChatMessage>();
        for (int i = 0; i < turns.Count; i++)
        {
            messages.Add(new ChatMessage("user", turns[i].User, i == 0 ? imageCount : 0));
            if (turns[i].Assistant is string a) messages.Add(new ChatMessage("assistant", a));
        }
        var text = ChatTemplate.Parse(source).Render(messages, addGenerationPrompt: true,
            new Dictionary<string, object?> { ["bos_token"] = tokenizer.BosToken ?? "", ["eos_token"] = tokenizer.EosToken ?? "" });
        // apply_chat_template's output already holds the special tokens the template wrote (BOS).
        return (text, false);
    }

    /// <summary>
    /// Tokenizes <paramref name="text"/> and expands each image placeholder token to
    /// <see cref="LlavaConfig.TokensPerImage"/> copies; the placeholders must match <paramref name="images"/> one to one.
    /// </summary>
    /// <exception cref="InvalidInputException">The tokenizer does not know the model's image token, or placeholders and images disagree.</exception>
    public static PromptInput Build(LlavaConfig config, Tokenizer tokenizer, string text, IReadOnlyList<ImageInput> images, bool addSpecialTokens = true)
    {
        var placeholder = tokenizer.IdToToken(config.ImageTokenIndex);
        if (placeholder is null)
            throw new InvalidInputException($"the tokenizer has no token for the model's image token id {config.ImageTokenIndex}");
        var ids = tokenizer.Encode(text, addSpecialTokens);
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

    /// <summary>
    /// The preprocessing options of a model directory: its preprocessor_config.json when present (else CLIP's
    /// defaults at the vision tower's size), with LLaVA-1.5's pad-to-square when <paramref name="pad"/>.
    /// </summary>
    public static ClipOptions PreprocessingFor(string modelDir, LlavaConfig config, bool pad)
    {
        var path = Path.Combine(modelDir, "preprocessor_config.json");
        int size = config.Vision.ImageSize;
        var o = File.Exists(path) ? ClipOptions.FromPreprocessorConfig(path)
            : ClipOptions.Clip336 with { ShortestEdge = size, CropHeight = size, CropWidth = size };
        return o with { PadToSquare = pad };
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
