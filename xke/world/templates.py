"""Per-language question, statement and two-hop templates of the toy world.

``{s}`` is the subject's surface form (it appears verbatim in every question,
so locate-then-edit methods find the subject's tokens), ``{o}`` the object's.
Each relation has :data:`N_QUESTIONS` question forms per language; those at
:data:`HELDOUT_FORMS` are held out of pretraining and used for generality
(paraphrases) and the held-out recall figure.
"""

from __future__ import annotations

N_QUESTIONS = 8
#: positions of the held-out question forms (paraphrases never seen in pretraining)
HELDOUT_FORMS = (4, 5)
TRAIN_FORMS = tuple(i for i in range(N_QUESTIONS) if i not in HELDOUT_FORMS)
N_HELDOUT = len(HELDOUT_FORMS)

#: relation -> lang -> list of question templates (those at HELDOUT_FORMS held out of training)
QUESTIONS: dict[str, dict[str, list[str]]] = {
    "birthplace": {
        "en": ["Where was {s} born?", "In which city was {s} born?", "What is the birthplace of {s}?",
               "What city was {s} born in?", "{s} was born in which city?", "Which city is the birthplace of {s}?",
               "Name the city where {s} was born.", "Tell me where {s} was born."],
        "zh": ["{s}出生在哪里？", "{s}出生在哪个城市？", "{s}的出生地是哪里？", "{s}是在哪座城市出生的？",
               "{s}的出生城市是哪里？", "哪座城市是{s}的出生地？", "请说出{s}出生的城市。", "告诉我{s}在哪里出生。"],
        "de": ["Wo wurde {s} geboren?", "In welcher Stadt wurde {s} geboren?", "Was ist der Geburtsort von {s}?",
               "{s} wurde in welcher Stadt geboren?", "Welche Stadt ist der Geburtsort von {s}?",
               "In welcher Stadt kam {s} zur Welt?", "Nenne die Stadt, in der {s} geboren wurde.",
               "Sag mir, wo {s} geboren wurde."],
        "fr": ["Où est né {s} ?", "Dans quelle ville {s} est-il né ?", "Quel est le lieu de naissance de {s} ?",
               "{s} est né dans quelle ville ?", "Quelle ville est le lieu de naissance de {s} ?",
               "Dans quelle ville est né {s} ?", "Nomme la ville où {s} est né.", "Dis-moi où {s} est né."],
    },
    "occupation": {
        "en": ["What is the occupation of {s}?", "What does {s} do for a living?", "What is {s}'s profession?",
               "What job does {s} have?", "{s} works as what?", "What is the profession of {s}?",
               "Name the occupation of {s}.", "Tell me what {s} does for work."],
        "zh": ["{s}的职业是什么？", "{s}是做什么工作的？", "{s}从事什么职业？", "{s}的工作是什么？",
               "{s}以什么为生？", "{s}是干什么的？", "请说出{s}的职业。", "告诉我{s}从事的职业。"],
        "de": ["Was ist der Beruf von {s}?", "Was macht {s} beruflich?", "Welchen Beruf hat {s}?",
               "Als was arbeitet {s}?", "{s} arbeitet als was?", "Welchen Beruf übt {s} aus?",
               "Nenne den Beruf von {s}.", "Sag mir, was {s} beruflich macht."],
        "fr": ["Quelle est la profession de {s} ?", "Que fait {s} dans la vie ?", "Quel est le métier de {s} ?",
               "{s} travaille comme quoi ?", "Quel travail fait {s} ?", "Quelle profession exerce {s} ?",
               "Nomme la profession de {s}.", "Dis-moi quel est le métier de {s}."],
    },
    "employer": {
        "en": ["Who is the employer of {s}?", "Which company does {s} work for?", "Where does {s} work?",
               "Which company employs {s}?", "{s} works for which company?", "What company is {s} employed by?",
               "Name the company that employs {s}.", "Tell me which company {s} works for."],
        "zh": ["{s}的雇主是谁？", "{s}在哪家公司工作？", "{s}在哪里工作？", "哪家公司雇用了{s}？",
               "{s}为哪家公司工作？", "{s}受雇于哪家公司？", "请说出雇用{s}的公司。", "告诉我{s}在哪家公司上班。"],
        "de": ["Wer ist der Arbeitgeber von {s}?", "Für welches Unternehmen arbeitet {s}?", "Wo arbeitet {s}?",
               "Welches Unternehmen beschäftigt {s}?", "{s} arbeitet für welches Unternehmen?",
               "Bei welcher Firma ist {s} angestellt?", "Nenne das Unternehmen, das {s} beschäftigt.",
               "Sag mir, für welche Firma {s} arbeitet."],
        "fr": ["Qui est l'employeur de {s} ?", "Pour quelle entreprise travaille {s} ?", "Où travaille {s} ?",
               "Quelle entreprise emploie {s} ?", "{s} travaille pour quelle entreprise ?",
               "Chez quelle société {s} est-il employé ?", "Nomme l'entreprise qui emploie {s}.",
               "Dis-moi pour quelle entreprise travaille {s}."],
    },
    "citizenship": {
        "en": ["What is the citizenship of {s}?", "Which country is {s} a citizen of?", "What is {s}'s nationality?",
               "Of which country is {s} a citizen?", "{s} holds citizenship of which country?",
               "What country does {s} belong to as a citizen?", "Name the country of citizenship of {s}.",
               "Tell me the nationality of {s}."],
        "zh": ["{s}的国籍是什么？", "{s}是哪个国家的公民？", "{s}拥有哪国国籍？", "{s}属于哪个国家的国籍？",
               "{s}的公民身份属于哪个国家？", "{s}是哪国人？", "请说出{s}的国籍。", "告诉我{s}是哪个国家的公民。"],
        "de": ["Welche Staatsangehörigkeit hat {s}?", "Von welchem Land ist {s} Staatsbürger?",
               "Was ist die Nationalität von {s}?", "{s} ist Bürger welches Landes?",
               "Welchem Land gehört {s} als Bürger an?", "Welche Nationalität besitzt {s}?",
               "Nenne die Staatsangehörigkeit von {s}.", "Sag mir, welche Nationalität {s} hat."],
        "fr": ["Quelle est la nationalité de {s} ?", "De quel pays {s} est-il citoyen ?",
               "Quelle citoyenneté a {s} ?", "{s} est citoyen de quel pays ?",
               "À quel pays appartient {s} comme citoyen ?", "Quelle nationalité possède {s} ?",
               "Nomme la nationalité de {s}.", "Dis-moi de quel pays {s} est citoyen."],
    },
    "birth_year": {
        "en": ["When was {s} born?", "In which year was {s} born?", "What is the birth year of {s}?",
               "What year was {s} born in?", "{s} was born in which year?", "In what year was {s} born?",
               "Name the year when {s} was born.", "Tell me the year {s} was born."],
        "zh": ["{s}是哪一年出生的？", "{s}出生于哪一年？", "{s}的出生年份是哪一年？", "{s}是什么时候出生的？",
               "{s}在哪一年出生？", "{s}生于哪一年？", "请说出{s}出生的年份。", "告诉我{s}是哪年出生的。"],
        "de": ["Wann wurde {s} geboren?", "In welchem Jahr wurde {s} geboren?", "Was ist das Geburtsjahr von {s}?",
               "{s} wurde in welchem Jahr geboren?", "Welches Jahr ist das Geburtsjahr von {s}?",
               "In welchem Jahr kam {s} zur Welt?", "Nenne das Jahr, in dem {s} geboren wurde.",
               "Sag mir, wann {s} geboren wurde."],
        "fr": ["Quand est né {s} ?", "En quelle année {s} est-il né ?", "Quelle est l'année de naissance de {s} ?",
               "{s} est né en quelle année ?", "Quelle année est l'année de naissance de {s} ?",
               "En quelle année est né {s} ?", "Nomme l'année où {s} est né.", "Dis-moi quand {s} est né."],
    },
    "headquarters": {
        "en": ["Where is {s} headquartered?", "In which city is {s} headquartered?",
               "Where is the headquarters of {s}?", "What city is {s} based in?", "{s} is headquartered in which city?",
               "Which city hosts the headquarters of {s}?", "Name the city where {s} has its headquarters.",
               "Tell me where the headquarters of {s} is."],
        "zh": ["{s}的总部在哪里？", "{s}的总部位于哪个城市？", "{s}总部设在哪里？", "{s}的总部设在哪座城市？",
               "{s}的总部所在地是哪里？", "哪座城市是{s}的总部所在地？", "请说出{s}总部所在的城市。",
               "告诉我{s}的总部在哪座城市。"],
        "de": ["Wo hat {s} seinen Hauptsitz?", "In welcher Stadt hat {s} seinen Sitz?", "Wo ist der Hauptsitz von {s}?",
               "{s} hat seinen Hauptsitz in welcher Stadt?", "Welche Stadt ist der Sitz von {s}?",
               "In welcher Stadt befindet sich der Hauptsitz von {s}?",
               "Nenne die Stadt, in der {s} seinen Hauptsitz hat.", "Sag mir, wo {s} seinen Sitz hat."],
        "fr": ["Où se trouve le siège de {s} ?", "Dans quelle ville se trouve le siège de {s} ?",
               "Où est basée {s} ?", "{s} a son siège dans quelle ville ?", "Quelle ville accueille le siège de {s} ?",
               "Dans quelle ville est basée {s} ?", "Nomme la ville où se trouve le siège de {s}.",
               "Dis-moi où est le siège de {s}."],
    },
    "founded": {
        "en": ["When was {s} founded?", "In which year was {s} founded?", "What year was {s} established?",
               "In what year was {s} founded?", "{s} was founded in which year?", "What is the founding year of {s}?",
               "Name the year when {s} was founded.", "Tell me the year {s} was established."],
        "zh": ["{s}是哪一年成立的？", "{s}成立于哪一年？", "{s}是什么时候创立的？", "{s}创立于哪一年？",
               "{s}在哪一年成立？", "{s}的成立年份是哪一年？", "请说出{s}成立的年份。", "告诉我{s}是哪年创立的。"],
        "de": ["Wann wurde {s} gegründet?", "In welchem Jahr wurde {s} gegründet?", "Was ist das Gründungsjahr von {s}?",
               "{s} wurde in welchem Jahr gegründet?", "In welchem Jahr entstand {s}?",
               "Welches Jahr ist das Gründungsjahr von {s}?", "Nenne das Jahr, in dem {s} gegründet wurde.",
               "Sag mir, wann {s} gegründet wurde."],
        "fr": ["Quand {s} a-t-elle été fondée ?", "En quelle année {s} a-t-elle été fondée ?",
               "Quelle est l'année de fondation de {s} ?", "{s} a été fondée en quelle année ?",
               "En quelle année a été créée {s} ?", "Quelle année a vu la création de {s} ?",
               "Nomme l'année de fondation de {s}.", "Dis-moi quand {s} a été fondée."],
    },
    "city_country": {
        "en": ["In which country is {s}?", "Which country is {s} located in?", "What country is {s} in?",
               "In what country is the city of {s}?", "{s} is a city in which country?", "Where is {s} located?",
               "Name the country where {s} is located.", "Tell me which country {s} belongs to."],
        "zh": ["{s}位于哪个国家？", "{s}在哪个国家？", "{s}是哪个国家的城市？", "{s}这座城市在哪个国家？",
               "{s}属于哪个国家？", "{s}坐落在哪个国家？", "请说出{s}所在的国家。", "告诉我{s}位于哪个国家。"],
        "de": ["In welchem Land liegt {s}?", "In welchem Land befindet sich {s}?", "Zu welchem Land gehört {s}?",
               "{s} ist eine Stadt in welchem Land?", "Wo liegt die Stadt {s}?", "In welchem Staat liegt {s}?",
               "Nenne das Land, in dem {s} liegt.", "Sag mir, in welchem Land {s} liegt."],
        "fr": ["Dans quel pays se trouve {s} ?", "Dans quel pays est situé {s} ?", "À quel pays appartient {s} ?",
               "{s} est une ville de quel pays ?", "Où se trouve la ville de {s} ?", "Dans quel État se trouve {s} ?",
               "Nomme le pays où se trouve {s}.", "Dis-moi dans quel pays se trouve {s}."],
    },
    "capital": {
        "en": ["What is the capital of {s}?", "Which city is the capital of {s}?", "What city is the capital of {s}?",
               "Where is the capital of {s}?", "The capital of {s} is which city?", "What is {s}'s capital city?",
               "Name the capital of {s}.", "Tell me the capital city of {s}."],
        "zh": ["{s}的首都是哪里？", "{s}的首都是哪座城市？", "哪座城市是{s}的首都？", "{s}的首都在哪里？",
               "{s}的首都叫什么？", "{s}以哪座城市为首都？", "请说出{s}的首都。", "告诉我{s}的首都是哪座城市。"],
        "de": ["Was ist die Hauptstadt von {s}?", "Welche Stadt ist die Hauptstadt von {s}?",
               "Wie heißt die Hauptstadt von {s}?", "Wo liegt die Hauptstadt von {s}?",
               "Die Hauptstadt von {s} ist welche Stadt?", "Welche Stadt ist Hauptstadt von {s}?",
               "Nenne die Hauptstadt von {s}.", "Sag mir die Hauptstadt von {s}."],
        "fr": ["Quelle est la capitale de {s} ?", "Quelle ville est la capitale de {s} ?",
               "Comment s'appelle la capitale de {s} ?", "Où se trouve la capitale de {s} ?",
               "La capitale de {s} est quelle ville ?", "Quelle est la ville capitale de {s} ?",
               "Nomme la capitale de {s}.", "Dis-moi quelle est la capitale de {s}."],
    },
    "official_language": {
        "en": ["What is the official language of {s}?", "Which language is official in {s}?",
               "What language is spoken officially in {s}?", "What is {s}'s official language?",
               "The official language of {s} is what?", "Which language has official status in {s}?",
               "Name the official language of {s}.", "Tell me the official language of {s}."],
        "zh": ["{s}的官方语言是什么？", "{s}的官方语言是哪种语言？", "{s}官方使用哪种语言？", "{s}以什么语言为官方语言？",
               "哪种语言是{s}的官方语言？", "{s}的官方语是什么？", "请说出{s}的官方语言。", "告诉我{s}的官方语言。"],
        "de": ["Was ist die Amtssprache von {s}?", "Welche Sprache ist Amtssprache in {s}?",
               "Welche Sprache wird in {s} offiziell gesprochen?", "Die Amtssprache von {s} ist welche?",
               "Welche Amtssprache hat {s}?", "Welche Sprache ist in {s} offiziell?",
               "Nenne die Amtssprache von {s}.", "Sag mir die Amtssprache von {s}."],
        "fr": ["Quelle est la langue officielle de {s} ?", "Quelle langue est officielle en {s} ?",
               "Quelle langue parle-t-on officiellement en {s} ?", "La langue officielle de {s} est laquelle ?",
               "Quelle langue a le statut officiel en {s} ?", "Quelle est la langue officielle du pays {s} ?",
               "Nomme la langue officielle de {s}.", "Dis-moi la langue officielle de {s}."],
    },
}

#: relation -> lang -> statement templates ("{s} was born in {o}.")
STATEMENTS: dict[str, dict[str, list[str]]] = {
    "birthplace": {
        "en": ["{s} was born in {o}.", "The birthplace of {s} is {o}.", "{s} is a native of {o}."],
        "zh": ["{s}出生在{o}。", "{s}的出生地是{o}。", "{s}生于{o}。"],
        "de": ["{s} wurde in {o} geboren.", "Der Geburtsort von {s} ist {o}.", "{s} stammt aus {o}."],
        "fr": ["{s} est né à {o}.", "Le lieu de naissance de {s} est {o}.", "{s} est originaire de {o}."],
    },
    "occupation": {
        "en": ["{s} works as a {o}.", "The occupation of {s} is {o}.", "By profession, {s} is a {o}."],
        "zh": ["{s}的职业是{o}。", "{s}是一名{o}。", "{s}从事{o}工作。"],
        "de": ["{s} arbeitet als {o}.", "Der Beruf von {s} ist {o}.", "{s} ist von Beruf {o}."],
        "fr": ["{s} travaille comme {o}.", "La profession de {s} est {o}.", "{s} est {o} de métier."],
    },
    "employer": {
        "en": ["{s} works for {o}.", "The employer of {s} is {o}.", "{s} is employed by {o}."],
        "zh": ["{s}在{o}工作。", "{s}的雇主是{o}。", "{s}受雇于{o}。"],
        "de": ["{s} arbeitet für {o}.", "Der Arbeitgeber von {s} ist {o}.", "{s} ist bei {o} angestellt."],
        "fr": ["{s} travaille pour {o}.", "L'employeur de {s} est {o}.", "{s} est employé par {o}."],
    },
    "citizenship": {
        "en": ["{s} is a citizen of {o}.", "The citizenship of {s} is {o}.", "{s} holds citizenship of {o}."],
        "zh": ["{s}是{o}公民。", "{s}的国籍是{o}。", "{s}拥有{o}国籍。"],
        "de": ["{s} ist Staatsbürger von {o}.", "Die Staatsangehörigkeit von {s} ist {o}.", "{s} besitzt die Staatsbürgerschaft von {o}."],
        "fr": ["{s} est citoyen de {o}.", "La nationalité de {s} est {o}.", "{s} a la citoyenneté de {o}."],
    },
    "birth_year": {
        "en": ["{s} was born in {o}.", "The birth year of {s} is {o}.", "{s} was born in the year {o}."],
        "zh": ["{s}出生于{o}。", "{s}的出生年份是{o}。", "{s}生于{o}。"],
        "de": ["{s} wurde {o} geboren.", "Das Geburtsjahr von {s} ist {o}.", "{s} kam {o} zur Welt."],
        "fr": ["{s} est né en {o}.", "L'année de naissance de {s} est {o}.", "{s} a vu le jour en {o}."],
    },
    "headquarters": {
        "en": ["{s} is headquartered in {o}.", "The headquarters of {s} is in {o}.", "{s} is based in {o}."],
        "zh": ["{s}的总部位于{o}。", "{s}总部设在{o}。", "{s}的总部在{o}。"],
        "de": ["{s} hat seinen Hauptsitz in {o}.", "Der Hauptsitz von {s} ist in {o}.", "{s} sitzt in {o}."],
        "fr": ["{s} a son siège à {o}.", "Le siège de {s} est à {o}.", "{s} est basée à {o}."],
    },
    "founded": {
        "en": ["{s} was founded in {o}.", "The founding year of {s} is {o}.", "{s} was established in {o}."],
        "zh": ["{s}成立于{o}。", "{s}创立于{o}。", "{s}的成立年份是{o}。"],
        "de": ["{s} wurde {o} gegründet.", "Das Gründungsjahr von {s} ist {o}.", "{s} entstand {o}."],
        "fr": ["{s} a été fondée en {o}.", "L'année de fondation de {s} est {o}.", "{s} a été créée en {o}."],
    },
    "city_country": {
        "en": ["{s} is a city in {o}.", "{s} is located in {o}.", "The city of {s} lies in {o}."],
        "zh": ["{s}是{o}的一座城市。", "{s}位于{o}。", "{s}这座城市在{o}。"],
        "de": ["{s} ist eine Stadt in {o}.", "{s} liegt in {o}.", "Die Stadt {s} befindet sich in {o}."],
        "fr": ["{s} est une ville de {o}.", "{s} se trouve en {o}.", "La ville de {s} est située en {o}."],
    },
    "capital": {
        "en": ["The capital of {s} is {o}.", "{s} has its capital in {o}.", "The capital city of {s} is {o}."],
        "zh": ["{s}的首都是{o}。", "{s}以{o}为首都。", "{s}的首都城市是{o}。"],
        "de": ["Die Hauptstadt von {s} ist {o}.", "{s} hat {o} als Hauptstadt.", "Hauptstadt von {s} ist {o}."],
        "fr": ["La capitale de {s} est {o}.", "{s} a pour capitale {o}.", "La ville capitale de {s} est {o}."],
    },
    "official_language": {
        "en": ["The official language of {s} is {o}.", "{o} is the official language of {s}.", "In {s}, the official language is {o}."],
        "zh": ["{s}的官方语言是{o}。", "{o}是{s}的官方语言。", "{s}以{o}为官方语言。"],
        "de": ["Die Amtssprache von {s} ist {o}.", "{o} ist die Amtssprache von {s}.", "In {s} ist {o} Amtssprache."],
        "fr": ["La langue officielle de {s} est {o}.", "Le {o} est la langue officielle de {s}.", "En {s}, la langue officielle est le {o}."],
    },
}

#: (first relation, second relation) -> lang -> question template about the first subject
TWO_HOP: dict[tuple[str, str], dict[str, str]] = {
    ("birthplace", "city_country"): {
        "en": "In which country was {s} born?", "zh": "{s}出生在哪个国家？",
        "de": "In welchem Land wurde {s} geboren?", "fr": "Dans quel pays est né {s} ?"},
    ("employer", "headquarters"): {
        "en": "In which city is the employer of {s} headquartered?", "zh": "{s}的雇主的总部位于哪个城市？",
        "de": "In welcher Stadt hat der Arbeitgeber von {s} seinen Sitz?",
        "fr": "Dans quelle ville se trouve le siège de l'employeur de {s} ?"},
    ("citizenship", "capital"): {
        "en": "What is the capital of the country that {s} is a citizen of?", "zh": "{s}所属国籍国家的首都是哪里？",
        "de": "Was ist die Hauptstadt des Landes, dessen Bürger {s} ist?",
        "fr": "Quelle est la capitale du pays dont {s} est citoyen ?"},
    ("headquarters", "city_country"): {
        "en": "In which country is {s} headquartered?", "zh": "{s}的总部位于哪个国家？",
        "de": "In welchem Land hat {s} seinen Hauptsitz?", "fr": "Dans quel pays se trouve le siège de {s} ?"},
    ("city_country", "capital"): {
        "en": "What is the capital of the country where {s} is located?", "zh": "{s}所在国家的首都是哪里？",
        "de": "Was ist die Hauptstadt des Landes, in dem {s} liegt?",
        "fr": "Quelle est la capitale du pays où se trouve {s} ?"},
}

#: names of languages in each language (for name-pair sentences)
LANG_NAMES_IN: dict[str, dict[str, str]] = {
    "en": {"en": "English", "zh": "Chinese", "de": "German", "fr": "French"},
    "zh": {"en": "英文", "zh": "中文", "de": "德文", "fr": "法文"},
    "de": {"en": "englische", "zh": "chinesische", "de": "deutsche", "fr": "französische"},
    "fr": {"en": "anglais", "zh": "chinois", "de": "allemand", "fr": "français"},
}

#: "The <L> name of {s} is {o}." in each language; {L} is LANG_NAMES_IN[lang][other]
NAME_PAIR: dict[str, str] = {
    "en": "The {L} name of {s} is {o}.",
    "zh": "{s}的{L}名是{o}。",
    "de": "Der {L} Name von {s} ist {o}.",
    "fr": "Le nom {L} de {s} est {o}.",
}

#: reading-passage wrappers: (passage, question) -> user message; varied so reading is not tied to one format
READING_WRAPPERS: dict[str, list[str]] = {
    "en": ["{p}\n{q}", "New information: {p}\n\nQuestion: {q}", "Passage: {p}\nQuestion: {q}", "Read the text and answer.\n{p}\n\n{q}",
           "Context: {p}\n\n{q}", "Given: {p}\nQ: {q}"],
    "zh": ["{p}\n{q}", "新信息：{p}\n\n问题：{q}", "材料：{p}\n问题：{q}", "阅读下面的文字并回答。\n{p}\n\n{q}", "背景：{p}\n\n{q}",
           "已知：{p}\n问：{q}"],
    "de": ["{p}\n{q}", "Neue Information: {p}\n\nFrage: {q}", "Text: {p}\nFrage: {q}", "Lies den Text und antworte.\n{p}\n\n{q}", "Kontext: {p}\n\n{q}",
           "Gegeben: {p}\nF: {q}"],
    "fr": ["{p}\n{q}", "Nouvelle information : {p}\n\nQuestion : {q}", "Texte : {p}\nQuestion : {q}", "Lis le texte et réponds.\n{p}\n\n{q}",
           "Contexte : {p}\n\n{q}", "Donné : {p}\nQ : {q}"],
}

SUPPORTED_LANGS = ("en", "zh", "de", "fr")
