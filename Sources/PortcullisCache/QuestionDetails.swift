import Foundation

/// What an embedding's similarity cannot be trusted with: two questions about the same thing
/// that ask for different answers because one detail differs. A semantic hit is served only
/// when the asked question differs from the cached one in wording alone:
/// - the same numbers (`404` / `500`, `15%` / `25%`);
/// - as many negations (`not`, `never`, `n't`, `не`, `нельзя`, …);
/// - no substituted word: when each question has a content word the other lacks (after a
///   crude stemming), they are about different things (`France` / `Germany`, `open` / `close`,
///   `flu` / `cold`); a word added on one side only (`Which city is the capital …`) is wording;
/// - a word in common after each direction word both use (`to`, `into`, `than`, `from`, `в`,
///   `чем`, …), so that `Celsius to Fahrenheit` and `Fahrenheit to Celsius` stay apart.
///
/// Function words and polite request verbs in English and Russian are not content words.
/// The check errs towards a miss: a paraphrase that swaps a content word (`speed of light` /
/// `how fast does light travel`) is asked upstream again, which costs a call, never a wrong answer.
public enum QuestionDetails {
    /// Why two questions differ in a detail that matters (nil: wording only).
    public enum Difference: String, Sendable, Equatable {
        case number
        case negation
        case substitution
        case direction
    }

    /// How `asked` differs from `cached` in a detail that changes the answer, or nil.
    public static func difference(_ cached: String, _ asked: String) -> Difference? {
        let a = Words(cached), b = Words(asked)
        if a.numbers.sorted() != b.numbers.sorted() { return .number }
        if a.negations != b.negations { return .negation }
        let onlyA = a.content.subtracting(b.content), onlyB = b.content.subtracting(a.content)
        if !onlyA.isEmpty && !onlyB.isEmpty { return .substitution }
        for (marker, followers) in a.directions {
            if let others = b.directions[marker], followers.isDisjoint(with: others) { return .direction }
        }
        return nil
    }

    /// One question's words, as the check compares them.
    struct Words {
        var numbers: [String] = []
        var negations = 0
        var content = Set<String>()
        /// For each direction word, the stems of the content words that follow it.
        var directions: [String: Set<String>] = [:]

        init(_ text: String) {
            var pendingMarkers: [String] = []
            for raw in Self.split(text.lowercased()) {
                var word = raw
                if word.hasSuffix("n't") || word.hasSuffix("n’t") {
                    negations += 1
                    word = String(word.dropLast(3))
                }
                if word.contains(where: \.isNumber) || QuestionDetails.numberWords.contains(word) || QuestionDetails.isNumberWord(word) {
                    numbers.append(word)
                    for marker in pendingMarkers { directions[marker, default: []].insert(word) }
                    pendingMarkers.removeAll()
                    continue
                }
                if QuestionDetails.negations.contains(word) {
                    negations += 1
                    continue
                }
                if QuestionDetails.directionWords.contains(word) {
                    pendingMarkers.append(word == "into" ? "to" : word == "во" ? "в" : word)
                    continue
                }
                guard !QuestionDetails.stopwords.contains(word), word.count > 1 || !word.allSatisfy(\.isLetter) else { continue }
                let stem = QuestionDetails.stem(word)
                content.insert(stem)
                for marker in pendingMarkers { directions[marker, default: []].insert(stem) }
                pendingMarkers.removeAll()
            }
        }

        /// Words: runs of letters, digits and the marks that belong to names (`c++`, `c#`, `don't`, `15%`).
        static func split(_ text: String) -> [String] {
            var words: [String] = []
            var current = ""
            for character in text {
                if character.isLetter || character.isNumber || "+#%'’".contains(character) {
                    current.append(character)
                } else if !current.isEmpty {
                    words.append(current)
                    current = ""
                }
            }
            if !current.isEmpty { words.append(current) }
            return words.map { word in
                // A possessive or a quote is not part of the word ("france's" is "france").
                var trimmed = word.trimmingCharacters(in: CharacterSet(charactersIn: "'’"))
                if trimmed.hasSuffix("'s") || trimmed.hasSuffix("’s") { trimmed = String(trimmed.dropLast(2)) }
                return trimmed
            }.filter { !$0.isEmpty }
        }
    }

    /// A crude stem, enough to see two inflections of one word as one: Cyrillic words lose one
    /// final vowel, `й` or `ь` and keep five letters; Latin ones lose a plural `s` and keep six.
    static func stem(_ word: String) -> String {
        var letters = Array(word)
        if letters.contains(where: { ("а"..."я").contains($0) || $0 == "ё" }) {
            if letters.count > 3, "аяыиуюеоёйь".contains(letters[letters.count - 1]) { letters.removeLast() }
            return String(letters.prefix(5))
        }
        if letters.count > 4, letters.last == "s", letters[letters.count - 2] != "s" { letters.removeLast() }
        return String(letters.prefix(6))
    }

    /// Numbers in words: English cardinals, ordinals and Roman numerals from II (a lone "I" is the pronoun).
    static let numberWords: Set<String> = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen",
        "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty",
        "ninety", "hundred", "thousand", "million", "billion", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth",
        "ninth", "tenth", "last", "half", "double", "triple", "single", "both", "pair", "couple", "dozen",
        "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii",
    ]

    /// Russian numerals by their stems (`два`, `двух`, `двое`, `двоих`, `второй`, `трёх`, `четверых`, …).
    static func isNumberWord(_ word: String) -> Bool {
        let stems = ["ноль", "нул", "один", "одн", "перв", "два", "две", "двух", "дво", "втор", "три", "трёх", "трех", "тро", "трет", "четыр",
                     "четвер", "четвёр", "пят", "шест", "сем", "восем", "восьм", "девят", "десят", "сто", "сот", "тысяч", "миллион",
                     "миллиард", "последн", "пол", "половин", "пар", "оба", "обе", "дюжин"]
        guard word.unicodeScalars.first.map({ (0x0400...0x04FF).contains($0.value) }) == true else { return false }
        // Short stems with a case ending only ("сто", "ста" are numbers; "стол", "стоит" are not), long ones as prefixes.
        let endings: Set<String> = ["", "а", "у", "ы", "е", "и", "ю", "я", "ой", "ам", "ах", "ом", "ух", "их", "ое", "ым"]
        return stems.contains { stem in
            stem.count <= 3 ? word.hasPrefix(stem) && endings.contains(String(word.dropFirst(stem.count))) : word.hasPrefix(stem)
        }
    }

    static let negations: Set<String> = ["not", "no", "never", "neither", "nor", "without", "cannot", "не", "нет", "нельзя", "ни", "никогда", "без", "ничего"]

    static let directionWords: Set<String> = ["to", "into", "than", "from", "versus", "vs", "в", "во", "чем", "из", "на"]

    static let stopwords: Set<String> = [
        // English function words, question words and polite request verbs.
        "a", "an", "the", "is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did", "done", "can", "could", "would", "should",
        "will", "shall", "may", "might", "must", "i", "me", "my", "mine", "myself", "you", "your", "yours", "we", "our", "us", "it", "its", "this",
        "that", "these", "those", "what", "what's", "which", "who", "whom", "whose", "where", "when", "why", "how", "of", "in", "on", "at", "for",
        "by", "with", "about", "as", "and", "or", "but", "if", "so", "there", "here", "please", "tell", "give", "show", "explain", "describe",
        "recommend", "suggest", "advise", "let", "know", "want", "need", "like", "just", "also", "some", "any", "way", "kindly", "hi", "hello",
        "s", "t", "d", "ll", "ve", "re", "m", "o", "up", "much", "many", "does", "have", "has", "had", "get", "best", "good", "really",
        // Russian function words, question words and polite request verbs.
        "и", "а", "но", "или", "да", "же", "ли", "бы", "ну", "что", "чтобы", "как", "какой", "какая", "какое", "какие", "каков", "какова",
        "каково", "каковы", "который", "которая", "кто", "где", "когда", "почему", "зачем", "отчего", "сколько", "мне", "меня", "мой", "моя",
        "мое", "моё", "мои", "свой", "свою", "своё", "я", "ты", "вы", "мы", "он", "она", "оно", "они", "это", "этот", "эта", "эти", "то", "у",
        "о", "об", "от", "до", "для", "по", "с", "со", "к", "ко", "про", "пожалуйста", "расскажи", "скажи", "объясни", "подскажи", "покажи",
        "дай", "посоветуй", "порекомендуй", "можешь", "можно", "нужно", "надо", "является", "есть", "был", "была", "было", "будет", "бывает",
        "всего", "там", "тут", "так", "уже", "ещё", "еще", "же",
    ]
}
