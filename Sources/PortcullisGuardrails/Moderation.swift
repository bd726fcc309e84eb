/// A moderation rule: a phrase (slots of word stems with a gap, as in the injection rules) in
/// one language, its sub-category and risk.
struct ModerationRule: PhraseRule {
    var name: String
    var language: String
    /// `hate`, `harassment`, `self_harm`, `sexual` or `violence`.
    var kind: String
    var risk: RiskLevel
    var gap: Int
    var slots: [[String]]

    init(_ name: String, _ language: String, _ kind: String, _ risk: RiskLevel, gap: Int = 2, _ slots: [[String]]) {
        self.name = name
        self.language = language
        self.kind = kind
        self.risk = risk
        self.gap = gap
        self.slots = slots
    }
}

/// The local moderation tier, in English and Russian: threats and instructions for violence,
/// self-harm, sexual content involving minors and explicit requests, dehumanising hate and
/// direct insults. Each rule needs a target or an object (a person, a group, oneself), so
/// that "kill the process", "a photo shoot at the church" or "убить время" pass.
///
/// A lexicon is a first line, not a classifier: it finds the plain cases cheaply, and a
/// policy can send the rest to an external moderation service.
public struct ModerationGuard: InputGuard {
    public let name = "moderation"
    public let tier = GuardTier.rules
    /// The lexicon, each multi-word stem expanded (a match's phrase id less the injection rules' count).
    private var expanded: [ModerationRule] { BuiltInPhrases.compiled.second }

    static let enPeople = ["you", "him", "her", "them", "everyone", "everybody", "family", "kids", "children", "wife", "husband",
                           "boss", "teacher", "neighbo", "people", "person"]
    static let enGroups = ["jews", "jewish", "muslims", "christians", "blacks", "whites", "immigrants", "migrants", "gays", "homosexuals",
                           "women", "arabs", "asians", "mexicans", "refugees", "gypsies", "roma", "africans", "hindus", "latinos",
                           "trans", "catholics", "chinese", "russians", "ukrainians"]
    static let ruPeople = ["тебя", "вас", "его", "её", "ее", "их", "всех", "семью", "детей", "жену", "мужа", "соседа", "начальника",
                           "учителя", "людей"]
    static let ruGroups = ["евре", "мусульман", "христиан", "черн", "чёрн", "мигрант", "приезж", "гея", "геев", "геи", "цыган", "хохл",
                           "кавказц", "таджик", "узбек", "женщин", "бабы", "москал", "чурк", "жид", "негр", "азиат", "украинц",
                           "русски", "армян", "грузин"]

    static let rules: [ModerationRule] = [
        // Violence: threats against people, instructions for weapons of harm.
        ModerationRule("threat", "en", "violence", .high, gap: 2,
                       [["i", "we"], ["will", "ll", "going", "gonna", "shall", "want"],
                        ["kill", "murder", "stab", "shoot", "strangle", "behead", "slaughter", "butcher", "execute"], enPeople]),
        ModerationRule("weapon-instructions", "en", "violence", .high, gap: 3,
                       [["how", "steps", "instructions", "guide", "recipe", "tutorial"], ["make", "build", "assemble", "synthesi", "cook", "produce"],
                        ["explosive", "ied", "molotov", "napalm", "detonator", "sarin", "ricin", "anthrax", "nerve", "ghost gun", "thermite"]]),
        ModerationRule("mass-attack", "en", "violence", .high, gap: 2,
                       [["massacre", "gun down", "mow down", "blow up", "shoot up"], ["school", "church", "mosque", "synagogue", "crowd",
                                                                                      "concert", "mall", "students", "classmates"]]),
        // Self-harm: intent (medium: a person may need help, the policy decides) and method-seeking (high).
        ModerationRule("self-harm-intent", "en", "self_harm", .medium, gap: 2,
                       [["kill", "hurt", "harm", "cut", "hang", "starve"], ["myself"]]),
        ModerationRule("suicide-intent", "en", "self_harm", .medium, gap: 3,
                       [["want", "going", "plan", "ready", "decided"], ["die", "suicide", "end"]]),
        ModerationRule("suicide-method", "en", "self_harm", .high, gap: 4,
                       [["how", "best", "easiest", "painless", "quickest", "way", "ways", "method", "many"],
                        ["kill myself", "suicide", "overdose", "hang myself", "end my life"]]),
        // Sexual: anything sexual with minors; explicit requests (medium).
        ModerationRule("minors", "en", "sexual", .critical, gap: 3,
                       [["nude", "naked", "porn", "erotic", "sexual", "sexy", "lewd", "explicit"],
                        ["child", "minor", "underage", "preteen", "kid", "schoolgirl", "schoolboy", "toddler", "loli"]]),
        ModerationRule("minors-reversed", "en", "sexual", .critical, gap: 2,
                       [["child", "minor", "underage", "preteen", "kid", "toddler"], ["porn", "nude", "naked", "erotic", "lewd"]]),
        ModerationRule("explicit", "en", "sexual", .medium, gap: 3,
                       [["write", "describe", "generate", "tell", "roleplay"], ["porn", "erotic", "smut", "sex scene", "explicit sex", "hardcore"]]),
        // Hate: dehumanising a group, calls to exterminate one.
        ModerationRule("dehumanise", "en", "hate", .high, gap: 2,
                       [enGroups, ["are", "is"], ["vermin", "subhuman", "rats", "cockroaches", "parasites", "animals", "savages", "plague",
                                                  "disease", "filth"]]),
        ModerationRule("exterminate", "en", "hate", .critical, gap: 3,
                       [["exterminate", "eradicate", "wipe out", "gas", "purge", "cleanse", "kill all", "deport all"], enGroups]),
        // Harassment: insults aimed at the reader.
        ModerationRule("insult", "en", "harassment", .medium, gap: 2,
                       [["you"], ["are", "re", "worthless", "pathetic", "disgusting"],
                        ["worthless", "pathetic", "idiot", "moron", "stupid", "disgusting", "loser", "retard", "scum", "trash", "piece of shit"]]),
        ModerationRule("go-die", "en", "harassment", .high, gap: 1,
                       [["go", "should", "hope"], ["kill yourself", "die", "kys"]]),

        ModerationRule("threat", "ru", "violence", .high, gap: 2,
                       [["убью", "убьём", "убьем", "зарежу", "пристрелю", "прикончу", "задушу", "застрелю", "прибью", "грохну"], ruPeople]),
        ModerationRule("threat-reversed", "ru", "violence", .high, gap: 1,
                       [ruPeople, ["убью", "убьём", "убьем", "зарежу", "пристрелю", "прикончу", "задушу", "застрелю", "прибью", "грохну"]]),
        ModerationRule("weapon-instructions", "ru", "violence", .high, gap: 3,
                       [["как", "инструкц", "рецепт", "способ"], ["сделать", "изготов", "собрать", "приготов", "синтезир"],
                        ["бомбу", "бомба", "бомбы", "бомбой", "взрывчат", "взрывное", "взрывн", "молотов", "зарин", "рицин", "детонатор", "напалм"]]),
        ModerationRule("mass-attack", "ru", "violence", .high, gap: 2,
                       [["расстрелять", "взорвать", "устроить", "перестрелять"], ["школ", "церков", "мечет", "синагог", "толп", "концерт",
                                                                                  "торгов", "одноклассник", "теракт", "бойн"]]),
        ModerationRule("self-harm-intent", "ru", "self_harm", .medium, gap: 2,
                       [["убить", "убью", "порезать", "покончить", "покончу", "повеситься", "повешусь"], ["себя", "собой"]]),
        ModerationRule("suicide-intent", "ru", "self_harm", .medium, gap: 2,
                       [["хочу", "собираюсь", "решил", "решила", "готов", "готова"], ["умереть", "суицид", "повеситься", "покончить", "сдохнуть"]]),
        ModerationRule("suicide-method", "ru", "self_harm", .high, gap: 3,
                       [["как", "способ", "лучший", "безболезненн", "сколько"], ["покончить", "повеситься", "суицид", "отравиться",
                                                                                  "таблеток", "передозировк"]]),
        ModerationRule("minors", "ru", "sexual", .critical, gap: 3,
                       [["порно", "голы", "голая", "голые", "обнажен", "эротич", "сексуальн", "интимн"],
                        ["дет", "ребен", "ребён", "несовершеннолет", "малолет", "школьниц", "школьник", "подрост"]]),
        ModerationRule("explicit", "ru", "sexual", .medium, gap: 3,
                       [["напиши", "опиши", "сочини", "расскажи"], ["порно", "эротическ", "откровенн", "постельн"]]),
        ModerationRule("dehumanise", "ru", "hate", .high, gap: 2,
                       [ruGroups, ["недолюди", "животные", "паразит", "таракан", "крысы", "мрази", "нелюди", "скот", "отброс", "грязь"]]),
        ModerationRule("exterminate", "ru", "hate", .critical, gap: 3,
                       [["уничтожить", "истребить", "перебить", "вырезать", "выгнать", "зачистить"], ["всех"] + ruGroups]),
        ModerationRule("insult", "ru", "harassment", .medium, gap: 1,
                       [["ты", "вы"], ["ничтожеств", "урод", "тупой", "тупая", "дебил", "идиот", "мразь", "тварь", "дура", "дурак", "ублюд"]]),
        ModerationRule("go-die", "ru", "harassment", .high, gap: 1,
                       [["иди", "пошёл", "пошел", "чтоб", "чтобы", "лучше"], ["сдохни", "сдох", "удавись", "повесься", "убейся"]]),
    ]

    /// Compiles the shared rules now (once per process), not on the first request.
    public init() {
        _ = BuiltInPhrases.compiled
    }

    public func inspect(_ input: GuardInput) async -> [GuardFinding] {
        input.findingsInUntrusted { inspect($0, segment: $1) }
    }

    /// Findings on any text (an answer, say).
    public func inspect(text: String) -> [GuardFinding] {
        inspect(NormalizedText(text), segment: nil)
    }

    func inspect(_ text: NormalizedText, segment: Int?) -> [GuardFinding] {
        var findings: [GuardFinding] = []
        var seen: Set<String> = []
        let offset = BuiltInPhrases.compiled.first.count
        let rules = expanded
        for match in text.builtInPhraseMatches where match.phraseID >= offset {
            let rule = rules[match.phraseID - offset]
            let reason = "\(rule.kind) rule \(rule.language).\(rule.name)"
            guard seen.insert(reason).inserted else { continue }
            let score = rule.risk >= .high ? 0.85 : 0.6
            findings.append(GuardFinding(guardName: name, category: .moderation, risk: rule.risk, score: score, reason: reason, segment: segment))
        }
        return findings
    }
}
