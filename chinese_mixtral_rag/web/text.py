"""What the web app says, in Chinese and English, its modes, and its style sheet."""

from __future__ import annotations

TEXT: dict[str, dict[str, str]] = {
    "zh": {
        "title": "中文 Mixtral 文档问答",
        "no_model": "**未配置模型：仅检索模式。** 设置 `CMR_MODEL_PATH` 为 Chinese-Mixtral 的 "
        "GGUF 文件或 Hugging Face 模型目录（或用 `cmrag web --model-path ...` 启动）即可获得回答。",
        "model_line": "模型：`{name}`（{backend}，上下文窗口 {window:,} tokens）",
        "bad_model": "**模型无法加载，现为仅检索模式：** {reason}",
        "kb": "知识库",
        "new_kb": "新建知识库（名称）",
        "create": "创建",
        "upload": "上传文档（可多选、拖放）",
        "ingest": "导入",
        "docs": "文档",
        "remove": "删除所选文档",
        "doc_to_remove": "要删除的文档",
        "mode": "模式",
        "selected": "所选文档",
        "question": "问题",
        "ask": "提问",
        "stop": "停止",
        "clear": "清空对话",
        "sources": "来源",
        "settings": "设置",
        "temperature": "温度",
        "max_tokens": "最大生成长度",
        "k": "检索段落数",
        "rerank": "使用重排序模型",
        "empty_question": "请输入问题。",
        "long_question": "问题太长（{n} 字，上限 {max} 字）。长文本请作为文档上传。",
        "need_selection": "请先在“所选文档”中选择文档。",
        "need_model": "此模式需要模型；当前为仅检索模式。",
        "no_files": "请先选择要上传的文件。",
        "bad_type": "不支持的文件类型：{name}。支持：{exts}",
        "ocr_pages": "OCR 识别扫描页：{name}",
        "too_big": "文件太大：{name}（{mb:.1f} MB，此类文件上限 {max:.0f} MB）。",
        "ingested": "导入完成：新增 {added}，更新 {updated}，未变 {unchanged}，失败 {failed}。",
        "failed": "失败：{name}：{reason}",
        "removed": "已删除 {name}（{n} 个片段）。",
        "budget": "上下文：{used:,} / {limit:,} tokens（资料 {material:,}，占窗口 {share:.0%}）",
        "stage_search": "检索中…",
        "stage_read": "读入 {material:,} tokens 资料…",
        "stage_generate": "生成中…",
        "stopped": "（已停止）",
        "whole": "；整篇放入：{names}",
        "no_sources": "（无来源）",
        "page": "第 {page} 页",
        "sheet_rows": "工作表 {sheet} 第 {rows} 行",
        "table_rows": "表 {table} 第 {rows} 行",
        "rows": "第 {rows} 行",
        "relevance": "相关度",
        "bad_kb": "知识库名称无效：{reason}",
        "col_file": "文件",
        "col_chunks": "片段数",
        "col_time": "导入时间",
        "col_state": "状态",
        "state_ready": "可检索",
        "state_words": "按字词可检索，向量计算中",
        "state_partial": "未写完，请重新导入",
        "stale": "⚠️ 检索索引与知识库不同步（索引 {indexed} 个片段，存储 {stored} 个）："
        "回答只用两边都有的内容。再导入一次文档即可刷新索引。",
    },
    "en": {
        "title": "Chinese-Mixtral document QA",
        "no_model": "**No model configured: search-only mode.** Set `CMR_MODEL_PATH` to a "
        "Chinese-Mixtral GGUF file or Hugging Face checkpoint directory (or start with "
        "`cmrag web --model-path ...`) to get answers.",
        "model_line": "Model: `{name}` ({backend}, context window {window:,} tokens)",
        "bad_model": "**The model could not be loaded; search-only mode:** {reason}",
        "kb": "Knowledge base",
        "new_kb": "New knowledge base (name)",
        "create": "Create",
        "upload": "Upload documents (several, drag and drop)",
        "ingest": "Ingest",
        "docs": "Documents",
        "remove": "Remove selected document",
        "doc_to_remove": "Document to remove",
        "mode": "Mode",
        "selected": "Selected documents",
        "question": "Question",
        "ask": "Ask",
        "stop": "Stop",
        "clear": "Clear conversation",
        "sources": "Sources",
        "settings": "Settings",
        "temperature": "Temperature",
        "max_tokens": "Max new tokens",
        "k": "Passages retrieved",
        "rerank": "Use the reranker",
        "empty_question": "Please type a question.",
        "long_question": "The question is too long ({n} characters, at most {max}). Upload long "
        "text as a document.",
        "need_selection": "Select documents under 'Selected documents' first.",
        "need_model": "This mode needs a model; the app runs in search-only mode.",
        "no_files": "Choose files to upload first.",
        "bad_type": "Unsupported file type: {name}. Supported: {exts}",
        "ocr_pages": "OCR of scanned pages: {name}",
        "too_big": "File too large: {name} ({mb:.1f} MB; at most {max:.0f} MB for this type).",
        "ingested": "Ingested: {added} added, {updated} updated, {unchanged} unchanged, "
        "{failed} failed.",
        "failed": "Failed: {name}: {reason}",
        "removed": "Removed {name} ({n} chunks).",
        "budget": "Context: {used:,} / {limit:,} tokens (material {material:,}, {share:.0%} of "
        "the window)",
        "stage_search": "Searching…",
        "stage_read": "Reading {material:,} tokens of material…",
        "stage_generate": "Generating…",
        "stopped": " (stopped)",
        "whole": "; whole files: {names}",
        "no_sources": "(no sources)",
        "page": "p. {page}",
        "sheet_rows": "sheet {sheet}, rows {rows}",
        "table_rows": "table {table}, rows {rows}",
        "rows": "rows {rows}",
        "relevance": "relevance",
        "bad_kb": "Invalid knowledge base name: {reason}",
        "col_file": "file",
        "col_chunks": "chunks",
        "col_time": "ingested",
        "col_state": "state",
        "state_ready": "ready",
        "state_words": "searchable by words, vectors being computed",
        "state_partial": "cut short: ingest again",
        "stale": "⚠️ The search index is out of step with the knowledge base ({indexed} chunks "
        "indexed, {stored} stored): answers use only what both hold. Ingest a document again to "
        "refresh the index.",
    },
}

#: UI label -> chain mode (and whether it needs selected documents).
MODES: dict[str, dict[str, tuple[str, str, bool]]] = {
    "zh": {
        "qa": ("知识库问答", "qa", False),
        "selected": ("所选文档问答", "qa", True),
        "search": ("仅检索", "search", False),
        "summarize": ("总结所选文档", "summarize", True),
        "chat": ("闲聊（不查文档）", "chat", False),
    },
    "en": {
        "qa": ("QA over the knowledge base", "qa", False),
        "selected": ("QA over selected documents", "qa", True),
        "search": ("Search only", "search", False),
        "summarize": ("Summarise selected documents", "summarize", True),
        "chat": ("Plain chat", "chat", False),
    },
}

CSS = """
.gradio-container, .prose, textarea, input { font-family: "WenQuanYi Zen Hei", "Noto Sans CJK SC",
  "Source Han Sans SC", "Microsoft YaHei", "PingFang SC", sans-serif; }
.source-card { border: 1px solid #ddd; border-radius: 8px; padding: 8px 10px; margin: 6px 0; }
.source-card:target { border-color: #f59e0b; background: #fffbeb; }
.source-card .meta { color: #666; font-size: 0.9em; }
.source-card p { white-space: pre-wrap; margin: 4px 0 0; }
"""
