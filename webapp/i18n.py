"""The zh/en message catalog: every user-facing string lives here, not in code or templates."""

from __future__ import annotations

from typing import Literal

Lang = Literal["zh", "en"]
DEFAULT_LANG: Lang = "zh"
LANG_COOKIE = "lang"

CATALOG: dict[str, dict[Lang, str]] = {
    # API and stream errors
    "session_created": {"zh": "聊天会话已创建", "en": "Chat session created"},
    "welcome": {
        "zh": "你好！我是你的AI助手，有什么可以帮助你的吗？",
        "en": "Hi! I'm your AI assistant. How can I help you?",
    },
    "error.message_empty": {"zh": "消息不能为空", "en": "The message cannot be empty"},
    "error.message_too_long": {
        "zh": "消息长度不能超过{limit}个字符",
        "en": "The message cannot be longer than {limit} characters",
    },
    "error.unknown_role": {"zh": "不支持的AI角色", "en": "Unsupported AI role"},
    "error.session_not_found": {"zh": "会话不存在", "en": "Conversation not found"},
    "error.turn_not_found": {"zh": "回复不存在或已过期", "en": "Reply not found or expired"},
    "error.forbidden_user": {"zh": "无权访问该用户的数据", "en": "You cannot access this user's data"},
    "error.invalid_user_id": {"zh": "无效的用户ID", "en": "Invalid user id"},
    "error.invalid_id": {"zh": "无效的ID", "en": "Invalid id"},
    "error.turn_running": {
        "zh": "该会话正在生成回复，请稍候",
        "en": "A reply is still being generated in this conversation",
    },
    "error.rate_limited": {
        "zh": "请求过于频繁，请稍后再试",
        "en": "Too many requests, please try again shortly",
    },
    "error.storage": {"zh": "数据存储服务异常，请稍后重试", "en": "Storage is unavailable, please try again"},
    "error.upstream": {"zh": "AI服务暂时不可用，请稍后重试", "en": "The AI service is unavailable, please try again"},
    "error.upstream_timeout": {"zh": "AI服务响应超时，请稍后重试", "en": "The AI service timed out, please try again"},
    "error.upstream_auth": {
        "zh": "AI服务认证失败，请检查API密钥配置",
        "en": "The AI service rejected the API key, please check the configuration",
    },
    "error.upstream_rate": {
        "zh": "AI服务繁忙（请求受限），请稍后重试",
        "en": "The AI service is rate limiting requests, please try again",
    },
    "error.interrupted": {"zh": "回复已中断", "en": "The reply was interrupted"},
    "error.invalid_input": {"zh": "请求参数无效", "en": "Invalid request"},
    "error.title_empty": {"zh": "标题不能为空", "en": "The title cannot be empty"},
    "error.not_found": {"zh": "页面不存在", "en": "Page not found"},
    "error.internal": {"zh": "服务器内部错误", "en": "Internal server error"},
    # demo model
    "demo.label": {"zh": "【演示模式 Demo】", "en": "[Demo mode]"},
    "demo.reply": {
        "zh": (
            "这是离线演示模型的回复，没有连接真正的AI服务。当前角色：{role}；本次收到 {count} 条上下文消息；"
            "你说的是：“{last}”。设置 OPENAI_API_KEY（以及可选的 OPENAI_BASE_URL、OPENAI_MODEL）即可连接真实模型。"
        ),
        "en": (
            "This reply comes from the offline demo model, not a real AI service. Role: {role}; "
            "context messages received: {count}; you said: \u201c{last}\u201d. Set OPENAI_API_KEY "
            "(and optionally OPENAI_BASE_URL, OPENAI_MODEL) to talk to a real model."
        ),
    },
}


def pick_lang(accept_language: str | None, cookie: str | None = None) -> Lang:
    """The remembered switch wins; otherwise the first zh/en in Accept-Language; zh by default."""
    if cookie in ("zh", "en"):
        return cookie  # type: ignore[return-value]
    if accept_language:
        for part in accept_language.split(","):
            tag = part.split(";")[0].strip().lower()
            if tag.startswith("zh"):
                return "zh"
            if tag.startswith("en"):
                return "en"
    return DEFAULT_LANG


def t(key: str, lang: Lang = DEFAULT_LANG, **params: object) -> str:
    """Translate a catalog key; unknown keys are returned as-is so a gap shows, not crashes."""
    entry = CATALOG.get(key)
    if entry is None:
        return key
    text = entry.get(lang) or entry[DEFAULT_LANG]
    return text.format(**params) if params else text
