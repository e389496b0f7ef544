"""Token counters for the splitter, built from tokenizers alone, never from model weights.

Chunks are sized in the chat model's tokens so that retrieved chunks fit the prompt budget the
packer computes with the same tokenizer, and optionally also in the embedding model's tokens so
that no chunk is silently truncated by the embedder. Three sources, one small protocol:

* a GGUF file: llama.cpp loads only the vocabulary (``vocab_only=True``, ~20 ms, no weight page
  is touched);
* a Hugging Face checkpoint directory: ``AutoTokenizer`` only, never the model;
* no model configured: :class:`ApproximateCounter`, a conservative estimate of Chinese-Mixtral's
  tokenizer.

Counters are cheap to build (the tokenizer is loaded once per process and path and then shared)
and pickle as their path, so worker processes rebuild them from their own cache.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from chinese_mixtral_rag.backends.model_files import (
    auto_tokenizer,
    declared_max_input,
    fast_tokenizer,
    gguf_vocab,
)
from chinese_mixtral_rag.errors import ModelLoadError

__all__ = [
    "ApproximateCounter",
    "GGUFVocabCounter",
    "HFTokenizerCounter",
    "TokenCounter",
    "chat_token_counter",
    "embedding_token_counter",
]


@runtime_checkable
class TokenCounter(Protocol):
    """Counts tokens of one tokenizer; what the splitter sizes chunks with."""

    name: str
    """Identifies the tokenizer in the index (``gguf:<file>``, ``hf:<dir>``, ``approx-v1``), so
    a store chunked with one tokenizer is not mistaken for one chunked with another."""

    def count(self, text: str) -> int:
        """Tokens of ``text`` alone (no BOS; special tokens only where the counter says so)."""
        ...

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        """``[count(t) for t in texts]``, faster where the tokenizer has a batch call."""
        ...


# --- no model: an estimate of Chinese-Mixtral's tokenizer -----------------------------------


class ApproximateCounter:
    """A conservative estimate of Chinese-Mixtral's token count, used only when no model is set.

    Chinese-Mixtral keeps Mixtral's 32000-piece SentencePiece BPE vocabulary with byte fallback,
    ``split_digits`` and a ``▁`` dummy prefix. BPE starts from one symbol per character (one per
    UTF-8 byte for a character that is not itself a piece) and only merges, so for text without
    ASCII letters this sum is an upper bound, not a guess:

    * 1 for the dummy prefix ``▁``;
    * 1 per character that is a whole piece of the vocabulary: the 1456 Chinese characters, the
      CJK and general punctuation, kana and Latin-1 listed in ``_MIXTRAL_SINGLE_PIECE_CHARS``
      (taken from Mixtral's ``tokenizer.model``, the one mistral-common 1.12.0 ships as
      ``tokenizer.model.v1``; Mixtral has only 3 multi-character Chinese pieces, so Chinese is
      almost exactly one token per known character);
    * UTF-8 length for any other non-ASCII character (byte-fallback tokens: 3 for a rare Chinese
      character such as 逝 or 淘, 4 for an emoji), the exact worst case;
    * 1 per ASCII digit, punctuation mark, space, tab or newline (newline and tab are byte
      tokens; runs of spaces merge, so this over-counts indentation).

    Only runs of ASCII letters are estimated: 0.4 token per letter plus 0.6 per capital inside a
    word, rounded up per word, with a single preceding space absorbed as in ``▁word``. Common
    English words are one token; jargon (``gguf``, ``cpp``), CamelCase and ALL CAPS split into
    many. English prose comes out 1.6-2.2x over, so English chunks are smaller than they could be.

    Checked against the real vocabulary with sentencepiece: on 三国演义 (1.36 real tokens per
    character: many rare characters fall back to bytes) and six law texts the estimate is 1.000-
    1.074x the true count and never below it; on English licences, READMEs and Python code
    1.6-2.2x for whole files, and at least 1.0x in every random 50-2000 character window but
    one. Random mixed-case identifiers (base64, drive ids) can be ~5% under.
    Worst case over: a rare non-Chinese script or an emoji, counted by bytes.
    """

    name: str = "approx-v1"

    def count(self, text: str) -> int:
        if not text:
            return 0
        data = text.encode("utf-8", "surrogatepass")
        rest = text.translate(_DELETE_SINGLE_PIECES)
        known_chars = len(text) - len(rest)
        known_bytes = len(data) - len(rest.encode("utf-8", "surrogatepass"))
        # Every byte is a token except that a known piece is one token whatever its byte length.
        tokens = len(data) - known_bytes + known_chars + 1
        for match in _LETTER_RUN.finditer(text):
            run = match.group()
            word = run.lstrip(" ")
            # Tenths of a token: 4 per letter, 10 per capital inside a word (CamelCase, ALL CAPS
            # and random ids split at almost every capital).
            inner_capitals = len(_CAPITAL.findall(word, 1))
            tenths = 4 * len(word) + 6 * inner_capitals
            tokens += (tenths + 9) // 10 - len(run)
        return tokens

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        return [self.count(text) for text in texts]

    def __repr__(self) -> str:
        return "ApproximateCounter()"


_LETTER_RUN = re.compile(r" ?[A-Za-z]+")
_CAPITAL = re.compile(r"[A-Z]")


# --- a GGUF file: llama.cpp's vocabulary ----------------------------------------------------


class GGUFVocabCounter:
    """Counts with the tokenizer stored in a GGUF file, loaded by llama.cpp without weights.

    ``vocab_only=True`` reads the metadata and vocabulary only: on a 219 MB GGUF it takes ~20 ms
    and leaves the process's peak memory unchanged, where a full load maps in all 219 MB. Counts
    match what the llama.cpp backend feeds the model for the same text (``add_bos=False``,
    ``special=False``: a literal ``<s>`` in a document is text, not a control token).
    """

    def __init__(self, model_path: str | Path) -> None:
        self.path = Path(model_path).expanduser().resolve()
        self.name = f"gguf:{self.path.name}"
        self._llama = gguf_vocab(self.path)

    def count(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        tokenize = self._llama.tokenize
        return [len(tokenize(t.encode("utf-8"), add_bos=False, special=False)) for t in texts]

    def __reduce__(self) -> tuple[Any, ...]:
        # A worker process reloads the vocabulary (milliseconds) instead of pickling llama.cpp.
        return (type(self), (str(self.path),))

    def __repr__(self) -> str:
        return f"GGUFVocabCounter({str(self.path)!r})"


# --- a Hugging Face tokenizer ---------------------------------------------------------------


class HFTokenizerCounter:
    """Counts with a Hugging Face tokenizer (``AutoTokenizer``), never loading the model.

    ``special_tokens=False`` (chat models) counts the text alone, and a literal ``<s>`` in a
    document counts as the characters it is, as the llama.cpp counter does.
    ``special_tokens=True`` (embedding models) counts what the embedder sees: the text with its
    ``[CLS]``/``[SEP]``, special-token strings in the text matched as the embedder matches them.
    Fast tokenizers count a whole batch in one Rust call.
    """

    def __init__(
        self, model_dir: str | Path, special_tokens: bool = False, name: str | None = None
    ) -> None:
        self.source = str(Path(model_dir).expanduser()) if _is_local(model_dir) else str(model_dir)
        self.special_tokens = special_tokens
        self.name = name or f"hf:{Path(self.source).name}"
        self._tokenizer, self._backend = _load_hf_tokenizer(self.source, special_tokens)

    def count(self, text: str) -> int:
        if self._backend is not None:
            return len(self._backend.encode(text, add_special_tokens=self.special_tokens).ids)
        return self.count_batch([text])[0]

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        if self._backend is not None:
            # encode_batch_fast (tokenizers >= 0.21) skips the character offsets we do not use.
            encode = getattr(self._backend, "encode_batch_fast", self._backend.encode_batch)
            encodings = encode(list(texts), add_special_tokens=self.special_tokens)
            return [len(encoding) for encoding in encodings]
        ids = self._tokenizer(
            list(texts),
            add_special_tokens=self.special_tokens,
            split_special_tokens=not self.special_tokens,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        return [len(row) for row in ids]

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.source, self.special_tokens, self.name))

    def __repr__(self) -> str:
        return f"HFTokenizerCounter({self.source!r}, special_tokens={self.special_tokens})"


@lru_cache(maxsize=8)
def _load_hf_tokenizer(source: str, special_tokens: bool) -> tuple[Any, Any]:
    """Load a tokenizer once per process and prepare its fast backend for counting.

    An embedder's ``tokenizer.json`` is all it takes (the tokenizers library, no transformers).
    Otherwise ``AutoTokenizer``: its backend is this load's own copy, so changing it affects no
    one else: truncation and padding are switched off, and without ``special_tokens``
    special-token strings in the text are encoded as plain text.
    """
    if special_tokens:
        fast_backend = fast_tokenizer(source)
        if fast_backend is not None:
            return None, fast_backend
    tokenizer = auto_tokenizer(source)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.no_truncation()
        backend.no_padding()
        if not special_tokens:
            backend.encode_special_tokens = True
    return tokenizer, backend


def _is_local(source: str | Path) -> bool:
    return Path(source).expanduser().exists()


# --- factories --------------------------------------------------------------------------------


def chat_token_counter(model_path: str | Path | None) -> TokenCounter:
    """The counter for the chat model at ``model_path``: a GGUF file, an HF directory, or None.

    None gives :class:`ApproximateCounter`, so ingest works with no model downloaded; the chunks
    are then sized conservatively and the packer still uses the real tokenizer at question time.
    """
    if model_path is None:
        return ApproximateCounter()
    path = Path(model_path).expanduser()
    if not path.exists():
        raise ModelLoadError(
            f"Model not found: {path}. Set CMR_MODEL_PATH (or pass model_path=) to a"
            " Chinese-Mixtral GGUF file or Hugging Face checkpoint directory, or leave it unset"
            " to size chunks with the built-in approximation."
        )
    if path.is_dir():
        return HFTokenizerCounter(path)
    return GGUFVocabCounter(path)


def embedding_token_counter(model_dir: str | Path) -> tuple[TokenCounter, int]:
    """The embedding model's counter (``[CLS]``/``[SEP]`` included) and its maximum input length.

    The length is sentence-transformers' ``max_seq_length`` (``sentence_bert_config.json``),
    where the embedder truncates, falling back to the tokenizer's ``model_max_length``. For the
    bundled all-MiniLM-L6-v2 that is 256 tokens, with every Chinese character one token.
    ``model_dir`` may also be the id of a model in the local Hugging Face cache.
    """
    source = str(model_dir)
    counter = HFTokenizerCounter(source, special_tokens=True, name=f"hf:{_display_name(source)}")
    max_length = declared_max_input(counter.source)
    if max_length is None:
        raise ModelLoadError(
            f"{source} declares no maximum input length (no sentence_bert_config.json and no"
            " model_max_length in tokenizer_config.json); add max_seq_length to its"
            " sentence_bert_config.json."
        )
    return counter, max_length


def _display_name(source: str) -> str:
    path = Path(source)
    # sentence-transformers packages often keep the model in a folder named just "model".
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


# Non-ASCII characters that are whole pieces of Mixtral's 32000-piece vocabulary, limited to CJK
# ideographs, CJK/general/full-width punctuation, kana and Latin-1 (other scripts are counted by
# their UTF-8 bytes, an over-count). Generated from tokenizer.model.v1 of mistral-common 1.12.0
# (md5 37974873eb68a7ab30c4912fc36264ae, identical to Mixtral-8x7B-v0.1's tokenizer.model):
# single-character pieces in U+00A1-00FF, 2000-206F, 3000-30FF, 3400-4DBF, 4E00-9FFF,
# F900-FAFF and FF00-FFEF whose Unicode category is a letter, digit, punctuation or symbol.
_MIXTRAL_SINGLE_PIECE_CHARS = (
    "¡¢£¤¥¦§¨©ª«¬®¯°±²³´µ¶·¸¹º»¼½¾¿ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖ×ØÙÚÛÜÝÞßàáâãäåæçèéêëìíîïðñòóôõö÷øù"
    "úûüýþÿ‐‑‒–—―‘’‚“”„‟†‡•…‰′″‹›※⁄、。《》「」『』【】〜あいうえおかがきくけげこごさしじすず"
    "せそただちっつてでとどなにねのはばひびふへべほまみむめもゃやょよらりるれろわをんァアィイ"
    "ウェエォオカガキギクグケゲコゴサザシジスズセゼソタダチッツテデトドナニネノハバパヒビピフ"
    "ブプヘベペホボポマミムメモャヤュユョラリルレロワンヴ・ー一丁七万三上下不与专且世业东丝丢"
    "两严並个中丰串临丶丹为主丽举久么义之乌乎乐乘九也习乡书买乱了予争事二于云互五井亚些亞亡交"
    "产享京亮亲人什仁仅今介仍从仓他付仙代令以仪们件价任份企伊休众优会伝传伤似但位低住佐体何余"
    "佛作你佳使來例供依侧便保信修個倍們倒候借値值假偏做停健備储傳像優儿允元兄充先光克免党入內"
    "全八公六兰共关兴兵其具典养兼内册再写军农冰冲决况冷准减几処出击函刀分切划列刘则刚创初删判"
    "別利刪别到制刷券刻則削前剑剩剪副割力办功加务动助励効势勇動務勝包化北匹区医區十千升午半华"
    "协单卖南博占卡卫印即却卷厂历压原去县参參又叉及友双反发取受变口古句另只叫可台史右叶号司吃"
    "各合吉同名后向吗君否吧含听启吴告员呢周味呼命和品哈响員哥哪唐售唯商啊問啟善喜單嘉器四回因"
    "团园围固国图圆圈國園圖土圣在地场址均坐块垂型城域執基堂堆報場塊塔塞填境增壁士声处备変复夏"
    "外多夜够夢大天太夫央失头夹奇奈奖套奥女她好如始姓委威媒子字存孙孝季学孩學宁它宇守安宋完宏"
    "宗官定宜宝实実审客宣室宫宮害家容宽宿寄密富察實寶寸对寺寻导対封射将將尊對小少尔尚尝就尺尼"
    "尽尾局层居屋屏展属山岗岛岡岩峰島崎嵌川州工左巨差己已巴币市布师希帐帖帝带帧師帮常幅幕干平"
    "年并幸广庄庆序库应底店府度座庫庭康延建开异弃式引弟张張強弹强归当录形彩影往征径待很律後徐"
    "得從御復循微德心必志忘応忠快念忽态怎思急性怪总恋恢恩息您情惠想意愛感態慢應戏成我或战戦截"
    "戰戳戶户房所手才打托扣执扩扫批找承技把投折抛択护报抽担拉拍拒拖招拟拥拦择括拳拷拼拿持挂指"
    "按振损换据捷授掉排探接控推描提插換搜摄摩播擇操支收改攻放政故效敏敗教散数整數文斗料断斯新"
    "方於施旅旋族旗无既日旧早时昌明易星映春昭是显時晚普景智暂暗暴曲更書曹曾替最會月有服望朝期"
    "木未末本术朱机杀杂权李材村束条来杨東松板极构析林枚果架某染查标栈栏树校株样核根格桃框案档"
    "桥梅梦检棋森検業楼楽概構様樂標模横橋機檔權次欢款歌止正此步武死殊残段殿毁母每比毕毛毫氏民"
    "气気水永求汇汉江池決沒沙没河油治泉法波注泰洋洛洞津洲活派流测济浏浪浮海消深混添清渡温測港"
    "渲游湖源準溪滑滚满滤演激灣火灯灰灵炮点為热無焦然照爆爱父爾片版牌牙牛物特状狂独猫獲率玉王"
    "玩环现珠班現球理瑞甘生產用田由甲申电男町画界留略番當病発登發白百的皇皮益监盖盘盟目直相省"
    "看県真眼着知矩短石码研破础硬确碎確碼磁示礼社祖神票禁福离秀私秋种科秒秘积称移程稍種稱稿究"
    "空突窗立站章端竹笑笔符第等答策签简算管箱節範米类粉精糊系紀約納級素索累細終組結統經続網線"
    "編總繁红约级纪纳线练组细织终绍经绑结绘给络绝统继续维缀缓编缩缺网罗置署羅美群義羽翻老考者"
    "而耗聊职联聖聚肉股育背胜胡能脑脚自至致與舞航般船良色艺节花苏苗若英范茶草荐药莉获菜華营萨"
    "落葉著葛蒙蓝藏藤虎虑虚號融血行術街衛衡衣补表袁被装裝裡製複西要覆見規視覧親见观规视览觉角"
    "解触言計訊記設許証試話該認語誤說読調請論警變计订认让训议讯记讲许论设访证评识诉词译试话询"
    "该详语误说请诸读课调谢谷豆象資贝负财责败账货质购贴贵费资赋赖赛赞赤走起超越足距跟跨路跳身"
    "車軍載輸轉车轩转轮软轴轻载较辑输边込达过迎运近返还这进远连迟迭述追退送适逆选透递途這通速"
    "造連進逻遇運遍過道達遗遠選避邀還那邮郎郡部都配酒醒采释里重野量金銀錄錢錯録针钟钥钮钱铁银"
    "铺链销锁错键镇镜長长門閉開間関關门闭问闲间闻阅队防阳阵阶阻阿附际陆陈降限院除险陳陵陽隆隊"
    "随隐隔際难雄雅集離雨雪雲零雷電需露青静非面音頁項順須預頭題額類顯页顶项顺须预领频题颜额風"
    "风飛飞食餐館饰馆首香馬駅马验骨體高鬼魏魔鱼鲁麻黄黑黒默點鼠齐龍龙！（），－．：；？～"
)

_DELETE_SINGLE_PIECES: dict[int, None] = dict.fromkeys(map(ord, _MIXTRAL_SINGLE_PIECE_CHARS))
