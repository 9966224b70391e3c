// Replies: the reply bar above the composer and the quote of the parent in a message.
import { QUOTE_CHARS, el, h, state } from './core.js';
import { seqOf } from './edit.js';

// ---------------------------------------------------------------- replies and quotes
export function snippet(text) {
  const flat = String(text).replace(/\s+/g, ' ').trim();
  const chars = Array.from(flat);
  return chars.length > QUOTE_CHARS ? chars.slice(0, QUOTE_CHARS).join('') + '…' : flat;
}

export function buildQuote(parentSeq) {
  const quote = h('button', 'quote');
  quote.type = 'button';
  quote.dataset.testid = 'quote';
  quote.dataset.action = 'jump';
  quote.dataset.parent = String(parentSeq);
  fillQuote(quote);
  return quote;
}

// The parent's author and the start of its text, or why there is none to show.
export function fillQuote(quote) {
  const parent = state.bySeq.get(Number(quote.dataset.parent));
  quote.replaceChildren();
  quote.classList.toggle('missing', !parent);
  if (!parent) {
    quote.append(h('span', 'quote-text', 'original message not loaded'));
    quote.title = '';
    return;
  }
  const author = parent.classList.contains('mine') ? 'You' : parent.dataset.author;
  quote.append(h('span', 'quote-author', author));
  const textNode = parent.querySelector('.bubble > .text');
  const text = parent.dataset.deleted || !textNode ? 'message deleted' : snippet(textNode.textContent);
  quote.append(h('span', 'quote-text', text));
  quote.title = 'Show the message ' + author + ' wrote';
}

export function refreshQuotes(seq) {
  for (const quote of el.messages.querySelectorAll('.quote[data-parent="' + seq + '"]')) {
    if (!quote.closest('.msg').dataset.stale) fillQuote(quote);
  }
  if (state.replyTo === seq) renderReplyBar();
}

export function jumpTo(seq) {
  const li = state.bySeq.get(seq);
  if (!li) return;
  li.scrollIntoView({ block: 'center' });
  li.classList.remove('flash');
  void li.offsetWidth; // restart the animation
  li.classList.add('flash');
}

export function startReply(li) {
  const seq = seqOf(li);
  if (seq === null || li.dataset.deleted) return;
  state.replyTo = seq;
  renderReplyBar();
  el.input.focus();
}

export function clearReply() {
  state.replyTo = null;
  renderReplyBar();
}

export function renderReplyBar() {
  if (state.replyTo === null) {
    el.replyBar.hidden = true;
    return;
  }
  const parent = state.bySeq.get(state.replyTo);
  const textNode = parent && parent.querySelector('.bubble > .text');
  el.replyAuthor.textContent = !parent ? 'a message' : parent.classList.contains('mine') ? 'yourself' : parent.dataset.author;
  el.replyText.textContent = !parent ? '' : parent.dataset.deleted || !textNode ? 'message deleted' : snippet(textNode.textContent);
  el.replyBar.hidden = false;
}
