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
    "error.cross_site": {
        "zh": "已拒绝来自其他网站的请求",
        "en": "A request from another site was refused",
    },
    "error.csrf": {
        "zh": "页面已过期，请刷新后重试",
        "en": "This page has expired; reload it and try again",
    },
    "error.invalid_text": {
        "zh": "文本包含无效字符（如孤立的代理项），无法保存",
        "en": "The text contains invalid characters (such as a lone surrogate) and cannot be saved",
    },
    "error.invalid_username": {
        "zh": "用户名需为3到32个字母、数字或 _ . -",
        "en": "A username is 3 to 32 letters, digits or _ . -",
    },
    "error.weak_password": {"zh": "密码至少需要8个字符", "en": "A password needs at least 8 characters"},
    "error.storage_full": {
        "zh": "存储空间已满（已用 {used} MB，上限 {quota} MB）。请删除一些对话（可先导出）后再试",
        "en": "Your storage is full ({used} MB of {quota} MB). Delete some conversations (export them first "
              "if you like) and try again",
    },
    "ui.storage_used": {"zh": "已用存储：{used} MB（上限 {quota} MB）", "en": "Storage used: {used} MB of {quota} MB"},
    "error.imports_limited": {
        "zh": "这一小时内导入的文件太多或太大，未导入任何内容。请 {minutes} 分钟后再试",
        "en": "Too many or too large imports this hour; nothing was imported. Try again in {minutes} min",
    },
    "error.sign_ins_here_limited": {
        "zh": "从这里输错密码的次数太多，请 {minutes} 分钟后再试",
        "en": "Too many wrong passwords from here; try again in {minutes} min",
    },
    "error.account_sign_ins_limited": {
        "zh": "这个账号最近有太多次失败的登录尝试。请在以前登录过的设备上登录，或 {minutes} 分钟后再试",
        "en": "This account has had too many failed sign-ins lately. Sign in from a device you used before, "
              "or try again in {minutes} min",
    },
    "error.revoked": {
        "zh": "登录已失效（已退出或令牌已撤销），请重新登录",
        "en": "This sign-in or token has ended (signed out or revoked); sign in again",
    },
    "error.password_short": {
        "zh": "密码至少需要 {limit} 个字符（首尾空格和不可见字符不计）",
        "en": "A password needs at least {limit} characters (spaces at either end and invisible ones do not count)",
    },
    "error.password_long": {"zh": "密码最多 {limit} 个字符", "en": "A password may have at most {limit} characters"},
    "error.password_common": {
        "zh": "这是最常见的密码之一，很容易被猜到，请换一个（可以用几个词组成的短语）",
        "en": "This is one of the most common passwords and easy to guess; choose another (a few words make a good one)",
    },
    "error.password_username": {
        "zh": "密码不能是用户名，也不能包含用户名",
        "en": "A password may not be or contain the username",
    },
    "error.sign_in_required": {"zh": "请先登录", "en": "Please sign in"},
    "error.bad_credentials": {"zh": "用户名或密码错误", "en": "Wrong username or password"},
    "error.bad_token": {"zh": "API令牌无效或已撤销", "en": "The API token is invalid or revoked"},
    "error.signup_closed": {"zh": "本站仅限受邀注册", "en": "Sign-up is by invitation only"},
    "error.seed_api_off": {"zh": "该接口已关闭", "en": "This API is turned off"},
    "error.token_not_found": {"zh": "令牌不存在", "en": "Token not found"},
    "error.username_taken": {"zh": "该用户名已被使用", "en": "This username is taken"},
    "error.name_kept_for_admin": {"zh": "该用户名留给管理员（ADMIN_USERS）：请由运维用 python -m webapp create-user 创建",
                                  "en": "This name is kept for an admin (ADMIN_USERS): the operator creates it with "
                                        "python -m webapp create-user"},
    "error.admin_protected": {"zh": "不能在此删除管理员账号：请先从 ADMIN_USERS 中移除该用户名",
                              "en": "An admin's account can't be deleted here: take the name out of ADMIN_USERS first"},
    "error.conversation_full": {
        "zh": "这个对话已有 {limit} 条消息，达到上限。请开始新对话。",
        "en": "This conversation has reached its limit of {limit} messages. Start a new chat to go on.",
    },
    "error.too_many_conversations": {
        "zh": "对话数量已达上限（{limit}），请先删除一些对话",
        "en": "You have reached the limit of {limit} conversations; delete some first",
    },
    "error.attachment_too_large": {"zh": "文件“{name}”过大（上限 {limit} MB）",
                                   "en": "The file “{name}” is too large (the limit is {limit} MB)"},
    "error.too_many_attachments": {"zh": "一条消息最多附带 {limit} 个文件", "en": "A message takes at most {limit} files"},
    "error.attachment_empty": {"zh": "文件“{name}”是空的", "en": "The file “{name}” is empty"},
    "error.attachment_type": {
        "zh": "不支持文件“{name}”：只接受图片（PNG、JPEG、WebP、GIF）、PDF 和文本文件，且文件名须与内容相符",
        "en": "The file “{name}” is not accepted: images (PNG, JPEG, WebP, GIF), PDF and text files only, "
              "with a name that matches the content",
    },
    "error.attachment_unreadable": {"zh": "无法读取文件“{name}”（损坏、加密或过大的图片）",
                                    "en": "The file “{name}” cannot be read (damaged, encrypted, or too many pixels)"},
    "error.attachment_not_found": {"zh": "找不到该文件（可能已过期）", "en": "File not found (it may have expired)"},
    "error.images_not_supported": {"zh": "模型 {model} 不能查看图片，请换一个模型或移除图片",
                                   "en": "The model {model} cannot see images: pick another model or remove the images"},
    "ui.attach": {"zh": "附加文件", "en": "Attach files"},
    "key.attach": {"zh": "附加文件 / 粘贴图片或文件（也可拖放到页面上）",
                   "en": "Attach files / paste an image or file (or drop them on the page)"},
    "ui.attach_remove": {"zh": "移除", "en": "Remove"},
    "ui.attachment_cut": {"zh": "仅发送了前 {kept} 个字符（共 {total} 个）",
                          "en": "only the first {kept} of {total} characters were sent"},
    "ui.attachment_pages_cut": {"zh": "仅读取了 {read}/{pages} 页", "en": "only {read} of {pages} pages were read"},
    "demo.attachments": {"zh": "我收到了这些文件：", "en": "I received these files:"},
    "error.request_too_large": {"zh": "请求内容过大", "en": "The request is too large"},
    "error.too_many_streams": {
        "zh": "打开的回复流过多，请关闭一些标签页",
        "en": "Too many replies are open at once; close some tabs",
    },
    "error.invalid_cursor": {"zh": "无效的分页游标", "en": "Invalid page cursor"},
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
    "error.reply_too_long": {
        "zh": "回复时间过长，已停止（已保留目前的内容）",
        "en": "The reply took too long and was stopped (what it wrote is kept)",
    },
    "error.save_failed": {
        "zh": "回复未能保存（存储服务异常），你的消息已保留，请重试",
        "en": "The reply could not be saved (storage trouble); your message is kept, please retry",
    },
    "error.save_pending": {
        "zh": "回复暂时无法保存（存储服务不可用）；存储恢复后，已写入的部分会作为中断的回复保留",
        "en": "The reply could not be saved yet (storage unreachable); once storage is back, the part it "
              "holds is kept as an interrupted reply",
    },
    "error.message_not_found": {"zh": "消息不存在", "en": "Message not found"},
    "error.nothing_to_regenerate": {
        "zh": "只能重新生成最后一条回复",
        "en": "Only the last reply can be regenerated",
    },
    "error.version_limit": {
        "zh": "这条消息的版本已达上限",
        "en": "This message has as many versions as it can keep",
    },
    "error.no_such_version": {"zh": "该版本不存在", "en": "No such version"},
    "error.interrupted": {"zh": "回复已中断", "en": "The reply was interrupted"},
    "error.upstream_not_stream": {
        "zh": "AI服务返回的是 {content_type}，而不是流式回复",
        "en": "The AI service answered with {content_type}, not a streamed reply",
    },
    "error.upstream_incomplete": {
        "zh": "AI服务的回复未正常结束，可能不完整（已保留目前的内容）",
        "en": "The AI service's reply ended abruptly and may be incomplete (what it wrote is kept)",
    },
    "error.invalid_input": {"zh": "请求参数无效", "en": "Invalid request"},
    "error.title_empty": {"zh": "标题不能为空", "en": "The title cannot be empty"},
    "error.not_found": {"zh": "页面不存在", "en": "Page not found"},
    "error.internal": {"zh": "服务器内部错误", "en": "Internal server error"},
    # demo model
    "demo.label": {"zh": "【演示模式 Demo】", "en": "[Demo mode]"},
    # Markdown on purpose: a first run without a key shows lists, tables and code as the renderer draws them
    "demo.reply": {
        "zh": (
            "这是离线演示模型的回复，没有连接真正的AI服务。\n\n"
            "> 你说的是：{last}\n\n"
            "- **当前角色：** {role}\n"
            "- **本次收到的上下文消息：** {count} 条\n"
            "- **连接真实模型：** 设置 `OPENAI_API_KEY`（以及可选的 `OPENAI_BASE_URL`、`OPENAI_MODEL`）\n\n"
            "| 设置 | 示例 |\n"
            "|---|---|\n"
            "| `OPENAI_API_KEY` | `sk-...` |\n"
            "| `OPENAI_BASE_URL` | `https://api.deepseek.com/v1` |\n"
            "| `OPENAI_MODEL` | `deepseek-chat` |\n\n"
            "```bash\n"
            "OPENAI_API_KEY=sk-... python -m webapp\n"
            "```"
        ),
        "en": (
            "This reply comes from the offline demo model, not a real AI service.\n\n"
            "> You said: {last}\n\n"
            "- **Role:** {role}\n"
            "- **Context messages received:** {count}\n"
            "- **To talk to a real model:** set `OPENAI_API_KEY` (and optionally `OPENAI_BASE_URL`, `OPENAI_MODEL`)\n\n"
            "| setting | example |\n"
            "|---|---|\n"
            "| `OPENAI_API_KEY` | `sk-...` |\n"
            "| `OPENAI_BASE_URL` | `https://api.deepseek.com/v1` |\n"
            "| `OPENAI_MODEL` | `deepseek-chat` |\n\n"
            "```bash\n"
            "OPENAI_API_KEY=sk-... python -m webapp\n"
            "```"
        ),
    },
    # web UI
    "ui.app_name": {"zh": "AI 对话", "en": "AI Chat"},
    "ui.new_chat": {"zh": "新对话", "en": "New chat"},
    "ui.untitled": {"zh": "新对话", "en": "New chat"},
    "ui.conversations": {"zh": "对话列表", "en": "Conversations"},
    "ui.search": {"zh": "搜索对话", "en": "Search conversations"},
    "ui.search_placeholder": {"zh": "搜索对话", "en": "Search chats"},
    "ui.search_button": {"zh": "搜索", "en": "Search"},
    "ui.search_empty": {"zh": "没有匹配“{q}”的对话", "en": "No conversations match “{q}”"},
    "ui.list_empty": {"zh": "还没有对话", "en": "No conversations yet"},
    "ui.load_more": {"zh": "加载更多", "en": "Load more"},
    "ui.load_older": {"zh": "加载更早的消息", "en": "Load earlier messages"},
    "ui.rename": {"zh": "重命名", "en": "Rename"},
    "ui.rename_label": {"zh": "对话标题", "en": "Conversation title"},
    "ui.rename_named": {"zh": "重命名“{title}”", "en": "Rename “{title}”"},
    "ui.save": {"zh": "保存", "en": "Save"},
    "ui.cancel": {"zh": "取消", "en": "Cancel"},
    "ui.delete": {"zh": "删除", "en": "Delete"},
    "ui.delete_named": {"zh": "删除“{title}”", "en": "Delete “{title}”"},
    "ui.delete_confirm": {
        "zh": "删除对话“{title}”？其中的所有消息都会被删除。",
        "en": "Delete “{title}”? All of its messages will be deleted.",
    },
    "ui.deleted": {"zh": "已删除“{title}”", "en": "Deleted “{title}”"},
    "ui.login": {"zh": "登录", "en": "Sign in"},
    "ui.signup": {"zh": "注册", "en": "Create an account"},
    "ui.logout": {"zh": "退出登录", "en": "Sign out"},
    "ui.logout_everywhere": {"zh": "在所有设备上退出", "en": "Sign out everywhere"},
    "ui.signed_out_everywhere": {"zh": "已在所有设备上退出", "en": "Signed out on every device"},
    "ui.signed_out_with_tokens": {
        "zh": "已在所有设备上退出：结束了 {signins} 个登录，撤销了 {tokens} 个 API 令牌。",
        "en": "Signed out everywhere: {signins} sign-ins ended and {tokens} API tokens revoked.",
    },
    "ui.signed_out_tokens_kept": {
        "zh": "已在所有设备上退出：结束了 {signins} 个登录。API 令牌仍然有效（可在设置中撤销）。",
        "en": "Signed out everywhere: {signins} sign-ins ended. API tokens still work (revoke them in Settings).",
    },
    "ui.logout_tokens_too": {"zh": "同时撤销我的全部 API 令牌（{n} 个）", "en": "Also revoke all my API tokens ({n})"},
    "ui.username": {"zh": "用户名", "en": "Username"},
    "ui.password": {"zh": "密码", "en": "Password"},
    "ui.settings": {"zh": "设置", "en": "Settings"},
    "ui.back_to_chat": {"zh": "返回对话", "en": "Back to the chat"},
    "ui.signed_in_as": {"zh": "已登录：{name}", "en": "Signed in as {name}"},
    "ui.api_tokens": {"zh": "API 令牌", "en": "API tokens"},
    "ui.api_tokens_hint": {
        "zh": "脚本可用 Authorization: Bearer <令牌> 调用 JSON API 和 SSE。",
        "en": "Scripts call the JSON API and SSE with Authorization: Bearer <token>.",
    },
    "ui.token_once": {
        "zh": "请立即复制此令牌：它只显示这一次。",
        "en": "Copy this token now: it is shown only once.",
    },
    "ui.no_tokens": {"zh": "还没有令牌", "en": "No tokens yet"},
    "ui.token_name": {"zh": "令牌名称", "en": "Token name"},
    "ui.token_default": {"zh": "我的脚本", "en": "My script"},
    "ui.create_token": {"zh": "创建令牌", "en": "Create token"},
    "ui.revoke": {"zh": "撤销", "en": "Revoke"},
    "ui.revoke_named": {"zh": "撤销令牌 {name}", "en": "Revoke token {name}"},
    "ui.sessions": {"zh": "登录会话", "en": "Sign-ins"},
    "ui.versions": {"zh": "版本", "en": "Versions"},
    "ui.version_prev": {"zh": "上一个版本", "en": "Previous version"},
    "ui.version_next": {"zh": "下一个版本", "en": "Next version"},
    "ui.regenerate": {"zh": "重新生成", "en": "Regenerate"},
    "ui.edit_message": {"zh": "编辑消息", "en": "Edit message"},
    "ui.edit_hint": {
        "zh": "保存后将重新发送；原来的消息及其后的对话仍可通过版本箭头查看。",
        "en": "Saving sends it again; the original and what followed stay reachable with the version arrows.",
    },
    "ui.save_and_send": {"zh": "保存并发送", "en": "Save and send"},
    "ui.copy_markdown": {"zh": "复制 Markdown 原文", "en": "Copy the Markdown source"},
    "ui.retry_hint": {"zh": "重新回答：{text}", "en": "Answer again: {text}"},
    "key.regenerate": {"zh": "重新生成最后一条回复", "en": "Regenerate the last reply"},
    "key.edit_last": {"zh": "编辑最后一条消息（输入框为空时）", "en": "Edit your last message (in an empty message box)"},
    "key.versions": {"zh": "切换最后一条有多个版本的消息", "en": "Flip versions of the last message that has them"},
    "ui.deleted_plain": {"zh": "对话已删除", "en": "Conversation deleted"},
    "ui.undo": {"zh": "撤销", "en": "Undo"},
    "ui.restored": {"zh": "已恢复“{title}”", "en": "Restored “{title}”"},
    "ui.restore_expired": {"zh": "已无法撤销删除", "en": "This deletion can no longer be undone"},
    "ui.generating": {"zh": "正在生成…", "en": "Generating…"},
    "ui.thinking": {"zh": "正在思考", "en": "Thinking"},
    "ui.noscript_refresh": {
        "zh": "回复生成中，本页会自动刷新。",
        "en": "The reply is being written; this page refreshes itself.",
    },
    "ui.you": {"zh": "你", "en": "You"},
    "ui.ai": {"zh": "AI", "en": "AI"},
    "ui.messages": {"zh": "消息", "en": "Messages"},
    "ui.message_label": {"zh": "输入消息", "en": "Message"},
    "ui.composer_placeholder": {"zh": "输入消息…", "en": "Send a message…"},
    "ui.composer_hint": {
        "zh": "Enter 发送 · Shift+Enter 换行 · ? 快捷键",
        "en": "Enter to send · Shift+Enter for a new line · ? for shortcuts",
    },
    "ui.send": {"zh": "发送", "en": "Send"},
    "ui.stop": {"zh": "停止生成", "en": "Stop generating"},
    "ui.stopped": {"zh": "已停止生成", "en": "Stopped"},
    "ui.too_long": {"zh": "超出 {n} 个字符", "en": "{n} characters over the limit"},
    "ui.retry": {"zh": "重试", "en": "Retry"},
    "ui.no_reply": {"zh": "没有收到回复。", "en": "No reply was received."},
    "ui.copy": {"zh": "复制", "en": "Copy"},
    "ui.copied": {"zh": "已复制", "en": "Copied"},
    "ui.copy_message": {"zh": "复制消息", "en": "Copy message"},
    "ui.code": {"zh": "代码", "en": "code"},
    "ui.role": {"zh": "角色", "en": "Role"},
    "ui.role_choose": {"zh": "选择 AI 角色", "en": "Choose the AI role"},
    "ui.open_menu": {"zh": "打开对话列表", "en": "Open conversations"},
    "ui.close_menu": {"zh": "关闭对话列表", "en": "Close conversations"},
    "ui.language": {"zh": "语言", "en": "Language"},
    "ui.shortcuts": {"zh": "键盘快捷键", "en": "Keyboard shortcuts"},
    "ui.close": {"zh": "关闭", "en": "Close"},
    "ui.skip_to_composer": {"zh": "跳到输入框", "en": "Skip to the message box"},
    "ui.error_title": {"zh": "出错了", "en": "Something went wrong"},
    "ui.back_home": {"zh": "返回对话", "en": "Back to your conversations"},
    "ui.network_error": {
        "zh": "网络连接失败，请检查网络后重试",
        "en": "Could not reach the server, please try again",
    },
    "ui.welcome_title": {"zh": "有什么可以帮你的？", "en": "How can I help you today?"},
    "ui.suggestion_1": {"zh": "用简单的话解释一下什么是递归", "en": "Explain recursion in simple words"},
    "ui.suggestion_2": {
        "zh": "写一个 Python 快速排序并说明复杂度",
        "en": "Write a Python quicksort and explain its complexity",
    },
    "ui.suggestion_3": {"zh": "帮我制定一个一周的学习计划", "en": "Help me plan a week of study"},
    "ui.running": {"zh": "正在回复", "en": "replying"},
    "ui.demo_badge": {"zh": "演示模式", "en": "Demo mode"},
    "ui.demo_hint": {
        "zh": "未设置 OPENAI_API_KEY，回复来自离线演示模型",
        "en": "OPENAI_API_KEY is not set: replies come from the offline demo model",
    },
    # pins, archive, folders, batches (issue 37)
    "error.too_many_pins": {"zh": "最多只能置顶 {limit} 个对话", "en": "You can pin at most {limit} conversations"},
    "error.too_many_folders": {"zh": "最多只能有 {limit} 个文件夹", "en": "You can have at most {limit} folders"},
    "error.folder_not_found": {"zh": "文件夹不存在", "en": "Folder not found"},
    "error.folder_name_taken": {"zh": "已有同名文件夹", "en": "A folder with this name exists"},
    "error.folder_name": {
        "zh": "文件夹名称需为 1–{limit} 个字符",
        "en": "A folder name is 1 to {limit} characters",
    },
    "error.batch_too_big": {
        "zh": "一次最多选择 {limit} 个对话",
        "en": "Select at most {limit} conversations at once",
    },
    "ui.pinned": {"zh": "已置顶", "en": "Pinned"},
    "ui.pin": {"zh": "置顶", "en": "Pin"},
    "ui.unpin": {"zh": "取消置顶", "en": "Unpin"},
    "ui.pin_named": {"zh": "置顶“{title}”", "en": "Pin “{title}”"},
    "ui.unpin_named": {"zh": "取消置顶“{title}”", "en": "Unpin “{title}”"},
    "ui.archive": {"zh": "归档", "en": "Archive"},
    "ui.unarchive": {"zh": "取消归档", "en": "Restore"},
    "ui.archive_named": {"zh": "归档“{title}”", "en": "Archive “{title}”"},
    "ui.unarchive_named": {"zh": "取消归档“{title}”", "en": "Restore “{title}”"},
    "ui.archived_view": {"zh": "已归档", "en": "Archived"},
    "ui.archived_empty": {"zh": "没有已归档的对话", "en": "No archived conversations"},
    "ui.back_to_list": {"zh": "返回对话列表", "en": "Back to conversations"},
    "ui.folders": {"zh": "文件夹", "en": "Folders"},
    "ui.folder_new": {"zh": "新建文件夹", "en": "New folder"},
    "ui.folder_name": {"zh": "文件夹名称", "en": "Folder name"},
    "ui.folder_create": {"zh": "创建", "en": "Create"},
    "ui.folder_rename": {"zh": "重命名文件夹", "en": "Rename folder"},
    "ui.folder_delete": {"zh": "删除文件夹（其中的对话保留）", "en": "Delete folder (its conversations stay)"},
    "ui.folder_all": {"zh": "全部 {n} 个", "en": "All {n}"},
    "ui.folder_empty": {"zh": "文件夹是空的", "en": "This folder is empty"},
    "ui.folder_none": {"zh": "不放入文件夹", "en": "No folder"},
    "ui.move": {"zh": "移动到", "en": "Move to"},
    "ui.move_named": {"zh": "移动“{title}”到文件夹", "en": "Move “{title}” to a folder"},
    "ui.move_button": {"zh": "移动", "en": "Move"},
    "ui.more_actions": {"zh": "更多操作：“{title}”", "en": "More actions for “{title}”"},
    "ui.select_named": {"zh": "选择“{title}”", "en": "Select “{title}”"},
    "ui.selected": {"zh": "已选 {n} 个", "en": "{n} selected"},
    "ui.bulk_delete": {"zh": "删除", "en": "Delete"},
    "ui.bulk_archive": {"zh": "归档", "en": "Archive"},
    "ui.bulk_export": {"zh": "导出", "en": "Export"},
    "ui.bulk_move": {"zh": "移动", "en": "Move"},
    "ui.with_selected": {"zh": "所选对话：", "en": "With the selected:"},
    "ui.bulk_done": {"zh": "已处理 {n} 个对话", "en": "{n} conversations done"},
    "ui.bulk_deleted": {"zh": "已删除 {n} 个对话", "en": "Deleted {n} conversations"},
    "ui.bulk_archived": {"zh": "已归档 {n} 个对话", "en": "Archived {n} conversations"},
    "ui.select_mode": {"zh": "选择多个", "en": "Select several"},
    "key.pin": {"zh": "置顶 / 取消置顶当前对话", "en": "Pin / unpin the focused conversation"},
    "key.archive": {"zh": "归档 / 取消归档当前对话", "en": "Archive / restore the focused conversation"},
    "key.move": {"zh": "把当前对话移到文件夹", "en": "Move the focused conversation to a folder"},
    "key.select": {"zh": "选中当前对话（Shift+点击选择一段）", "en": "Select the focused conversation (Shift+click: a range)"},
    "key.next": {"zh": "下一个对话", "en": "Next conversation"},
    "key.prev": {"zh": "上一个对话", "en": "Previous conversation"},
    "key.search": {"zh": "搜索对话", "en": "Search conversations"},
    "key.results": {"zh": "在搜索结果中移动", "en": "Move through the results"},
    "key.open": {"zh": "打开选中的对话", "en": "Open the selected conversation"},
    "key.back": {"zh": "从列表回到输入框", "en": "Back to the message box from the list"},
    "key.new": {"zh": "新对话", "en": "New chat"},
    "key.stop": {"zh": "停止生成（回复进行中）", "en": "Stop generating (while a reply streams)"},
    "key.focus": {"zh": "聚焦输入框", "en": "Focus the message box"},
    "key.send": {"zh": "发送消息", "en": "Send the message"},
    "key.newline": {"zh": "换行", "en": "New line"},
    "key.help": {"zh": "显示本帮助", "en": "Show this help"},
    "key.or": {"zh": "或", "en": "or"},
    # custom roles, models, export and import, read-only links
    "error.role_limit": {"zh": "自定义角色数量已达上限（{limit}）", "en": "You have reached the limit of {limit} custom roles"},
    "error.role_not_found": {"zh": "角色不存在", "en": "Role not found"},
    "error.unknown_model": {"zh": "不支持的模型", "en": "Unsupported model"},
    "error.share_not_found": {"zh": "链接不存在或已撤销", "en": "This link does not exist or was revoked"},
    "error.invalid_import": {
        "zh": "导入文件无效：请使用本站“导出全部数据”生成的 JSON 文件",
        "en": "Invalid import file: use a JSON file made by “Export all data”",
    },
    "error.import_limit": {
        "zh": "导入后将超过上限（{what}：{limit}），未导入任何内容",
        "en": "Importing would pass the limit ({what}: {limit}); nothing was imported",
    },
    "ui.manage_roles": {"zh": "管理自定义角色…", "en": "Manage custom roles…"},
    "ui.roles_title": {"zh": "AI 角色", "en": "AI roles"},
    "ui.roles_hint": {
        "zh": "内置角色之外，你可以创建最多 {n} 个自己的角色：名称、简介、系统提示词，以及可选的模型和温度。",
        "en": "Besides the built-in roles you can create up to {n} of your own: a name, a description, a system prompt, and optionally a model and a temperature.",
    },
    "ui.role_builtin": {"zh": "内置", "en": "built-in"},
    "ui.role_name": {"zh": "名称", "en": "Name"},
    "ui.role_description": {"zh": "简介", "en": "Description"},
    "ui.role_prompt": {"zh": "系统提示词", "en": "System prompt"},
    "ui.role_new": {"zh": "新建角色", "en": "New role"},
    "ui.role_create": {"zh": "创建角色", "en": "Create role"},
    "ui.role_missing": {
        "zh": "此对话原来的自定义角色已被删除，现在使用“{name}”。",
        "en": "This conversation's custom role was deleted; it now uses “{name}”.",
    },
    "ui.temperature": {"zh": "温度", "en": "Temperature"},
    "ui.edit": {"zh": "编辑", "en": "Edit"},
    "ui.model": {"zh": "模型", "en": "Model"},
    "ui.model_default": {"zh": "默认", "en": "Default"},
    "ui.model_default_hint": {"zh": "默认：角色的模型，否则为站点设置", "en": "Default: the role's model, else the app's"},
    "ui.apply": {"zh": "应用", "en": "Apply"},
    "ui.export_share": {"zh": "导出 / 分享", "en": "Export / share"},
    "ui.export": {"zh": "导出", "en": "Export"},
    "ui.exported": {"zh": "导出时间", "en": "Exported"},
    "ui.export_md": {"zh": "下载 Markdown", "en": "Download as Markdown"},
    "ui.export_json": {"zh": "下载 JSON", "en": "Download as JSON"},
    "ui.share": {"zh": "分享只读链接", "en": "Share a read-only link"},
    "ui.share_hint": {
        "zh": "持有链接的任何人都能查看此对话（只读，无需登录）。撤销后链接立即失效。",
        "en": "Anyone with the link can read this conversation (read-only, no sign-in). Revoking it stops the link at once.",
    },
    "ui.share_link": {"zh": "只读链接", "en": "Read-only link"},
    "ui.share_open": {"zh": "打开链接", "en": "Open the link"},
    "ui.share_create": {"zh": "创建链接", "en": "Create a link"},
    "ui.share_revoke": {"zh": "撤销链接", "en": "Revoke the link"},
    "ui.shared_notice": {"zh": "只读分享的对话", "en": "A shared conversation (read-only)"},
    "ui.your_data": {"zh": "你的数据", "en": "Your data"},
    "ui.your_data_hint": {
        "zh": "把全部对话和自定义角色导出为一个 JSON 文件，或导入这样的文件（导入的内容成为新的对话）。",
        "en": "Export all your conversations and custom roles as one JSON file, or import such a file (it becomes new conversations).",
    },
    "ui.export_all": {"zh": "导出全部数据", "en": "Export all data"},
    "ui.import_file": {"zh": "导入文件", "en": "File to import"},
    "ui.import": {"zh": "导入", "en": "Import"},
    "ui.imported": {"zh": "已导入 {n} 个对话", "en": "Imported {n} conversations"},
    # relative times in the sidebar
    "time.now": {"zh": "刚刚", "en": "just now"},
    "time.minutes": {"zh": "{n} 分钟前", "en": "{n} min ago"},
    "time.hours": {"zh": "{n} 小时前", "en": "{n} h ago"},
    "time.yesterday": {"zh": "昨天", "en": "yesterday"},
    "time.days": {"zh": "{n} 天前", "en": "{n} days ago"},
    "time.date": {"zh": "{y}年{m}月{d}日", "en": "{y}-{m:02d}-{d:02d}"},
}

# usage, budgets, admin (issue 36)
CATALOG.update({
    "error.over_budget": {
        "zh": "本月的 token 额度已用完（已用 {used}，额度 {budget}），将于 {resets}（UTC）重置。你输入的内容已保留",
        "en": "Your monthly token budget is used up ({used} of {budget}); it resets on {resets} (UTC). "
              "What you typed is kept",
    },
    "error.budget_busy": {
        "zh": "另一条回复正在生成；有 token 额度的账户一次只能生成一条，请稍候再试",
        "en": "Another reply is being written; with a token budget, one is written at a time. Try again shortly",
    },
    "error.admin_only": {"zh": "仅管理员可以访问此页面", "en": "Only admins can open this page"},
    "error.user_not_found": {"zh": "用户不存在", "en": "User not found"},
    "error.account_disabled": {"zh": "此账户已被停用", "en": "This account is disabled"},
    "ui.usage": {"zh": "用量", "en": "Usage"},
    "ui.usage_title": {"zh": "最近 30 天的用量", "en": "Usage in the last 30 days"},
    "ui.usage_month": {
        "zh": "本月已用 {used} tokens，额度 {budget}，{resets} 重置", "en": "This month: {used} tokens of {budget}; resets {resets}",
    },
    "ui.usage_month_unlimited": {"zh": "本月已用 {used} tokens（无额度限制）", "en": "This month: {used} tokens (no budget)"},
    "ui.usage_none": {"zh": "最近 30 天没有用量", "en": "No usage in the last 30 days"},
    "ui.usage_chart": {"zh": "每日 token 用量图", "en": "Tokens per day"},
    "ui.day": {"zh": "日期", "en": "Day"},
    "ui.tokens_in": {"zh": "输入", "en": "In"},
    "ui.tokens_out": {"zh": "输出", "en": "Out"},
    "ui.tokens": {"zh": "tokens", "en": "tokens"},
    "ui.replies": {"zh": "回复数", "en": "Replies"},
    "ui.cost": {"zh": "费用", "en": "Cost"},
    "ui.total": {"zh": "合计", "en": "Total"},
    "ui.by_model": {"zh": "按模型", "en": "By model"},
    "ui.by_day": {"zh": "按日期和模型", "en": "By day and model"},
    "ui.estimated": {"zh": "估算", "en": "estimated"},
    "ui.estimated_note": {
        "zh": "标记“估算”的数字来自未报告用量的模型，按字符数估算", "en": "Numbers marked estimated come from a model that "
        "reported none: counted from the characters",
    },
    "ui.reply_usage": {
        "zh": "{model} · 输入 {input} · 输出 {output} tokens · {rate} tokens/秒",
        "en": "{model} · {input} in · {output} out tokens · {rate} tokens/s",
    },
    "ui.conversation_usage": {"zh": "本对话共 {tokens} tokens", "en": "This conversation: {tokens} tokens"},
    "ui.admin": {"zh": "管理", "en": "Admin"},
    "ui.admin_search": {"zh": "按用户名前缀查找", "en": "Find users by the start of their name"},
    "ui.admin_find": {"zh": "查找", "en": "Find"},
    "ui.admin_count": {"zh": "共 {n} 个用户 · 第 {page}/{pages} 页", "en": "{n} users · page {page} of {pages}"},
    "ui.created": {"zh": "创建于", "en": "Created"},
    "ui.last_active": {"zh": "最近活动", "en": "Last active"},
    "ui.conversations": {"zh": "对话数", "en": "Conversations"},
    "ui.tokens_month": {"zh": "本月 tokens", "en": "Tokens this month"},
    "ui.budget": {"zh": "月度额度", "en": "Monthly budget"},
    "ui.budget_set": {"zh": "月度额度（tokens，0 = 不限，留空 = 默认）", "en": "Monthly budget (tokens; 0 = unlimited; empty = default)"},
    "ui.storage": {"zh": "存储", "en": "Storage"},
    "ui.status": {"zh": "状态", "en": "Status"},
    "ui.actions": {"zh": "操作", "en": "Actions"},
    "ui.manage": {"zh": "管理", "en": "Manage"},
    "ui.unlimited": {"zh": "不限", "en": "unlimited"},
    "ui.default": {"zh": "默认", "en": "default"},
    "ui.active": {"zh": "正常", "en": "active"},
    "ui.disabled": {"zh": "已停用", "en": "disabled"},
    "ui.enable": {"zh": "启用", "en": "Enable"},
    "ui.disable": {"zh": "停用", "en": "Disable"},
    "ui.reset_password": {"zh": "重置密码", "en": "Reset password"},
    "ui.password_once": {
        "zh": "{name} 的新密码如下，只显示这一次；请安全地告知对方", "en": "The new password of {name}, shown this once: "
        "pass it on safely",
    },
    "ui.delete_user": {"zh": "删除用户及其全部数据", "en": "Delete the user and all their data"},
    "ui.delete_user_confirm": {"zh": "输入用户名 {name} 以确认", "en": "Type the username {name} to confirm"},
    "ui.no_users": {"zh": "没有找到用户", "en": "No users found"},
    "ui.pages": {"zh": "分页", "en": "Pages"},
    "ui.previous": {"zh": "上一页", "en": "Previous"},
    "ui.next": {"zh": "下一页", "en": "Next"},
    "ui.audit": {"zh": "管理操作记录", "en": "Admin actions"},
    "ui.audit_none": {"zh": "还没有管理操作", "en": "No admin actions yet"},
    "ui.audit_entry": {"zh": "{who} 对 {whom}：{what}", "en": "{who} · {what} · {whom}"},
    "ui.audit_disable": {"zh": "停用", "en": "disabled"},
    "ui.audit_enable": {"zh": "启用", "en": "enabled"},
    "ui.audit_budget": {"zh": "设置额度", "en": "set the budget of"},
    "ui.audit_reset_password": {"zh": "重置密码", "en": "reset the password of"},
    "ui.audit_delete": {"zh": "删除", "en": "deleted"},
    "ui.audit_publish_role": {"zh": "向所有人发布角色", "en": "published the role"},
    "ui.audit_unpublish_role": {"zh": "撤回角色", "en": "withdrew the role"},
    "ui.roles_for_everyone": {"zh": "所有人可用的角色", "en": "Roles for everyone"},
    "ui.roles_for_everyone_hint": {
        "zh": "发布你自己的角色后，所有用户都能在内置角色旁选用它，但不能修改；修改后再次发布即可更新",
        "en": "A role of yours, once published, appears beside the built-in ones for every user, who cannot edit "
              "it; publish it again after an edit to update it",
    },
    "ui.publish_role": {"zh": "发布我的角色", "en": "Publish one of my roles"},
    "ui.publish": {"zh": "发布", "en": "Publish"},
    "ui.unpublish": {"zh": "撤回", "en": "Withdraw"},
    "ui.unpublish_named": {"zh": "撤回 {name}", "en": "Withdraw {name}"},
    "ui.no_published_roles": {"zh": "还没有发布的角色", "en": "No roles published yet"},
    "ui.role_published": {"zh": "管理员发布", "en": "from an admin"},
})


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
