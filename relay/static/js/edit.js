// Reply / Edit / Delete on a message, inline editing, and message_edited / message_deleted.
import { isCurrentRoom, showBanner } from '../app.js';
import { conn, el, fullFormat, h, state } from './core.js';
import { renderSeenBy } from './reads.js';
import { clearReply, jumpTo, refreshQuotes, renderReplyBar, startReply } from './replies.js';
import { discardPending, retryPending, setMsgStatus } from './send.js';

// ---------------------------------------------------------------- message actions
// The seq a message can be answered, edited or deleted by: only messages of the room's
// current life the relay has ordered (not sending, not a degraded cluster's local copy).
export function seqOf(li) {
  if (!li || li.dataset.pending || li.dataset.stale || li.dataset.local) return null;
  const seq = Number(li.dataset.seq);
  return Number.isFinite(seq) && state.bySeq.get(seq) === li ? seq : null;
}

export function setActions(li, mode) {
  let bar = li.querySelector('.actions');
  if (!bar) {
    bar = h('div', 'actions');
    bar.dataset.testid = 'actions';
    li.append(bar);
  }
  bar.replaceChildren();
  bar.classList.toggle('confirming', mode === 'confirm-delete');
  const add = (action, label, title) => {
    const button = h('button', 'action action-' + action, label);
    button.type = 'button';
    button.dataset.action = action;
    if (title) button.title = title;
    bar.append(button);
  };
  const editing = state.editing && state.editing.li === li;
  if (li.dataset.pending) {
    if (li.classList.contains('failed')) {
      add('retry', 'Retry', 'Send it again');
      add('discard', 'Discard', 'Remove it');
    }
  } else if (mode === 'confirm-delete') {
    bar.append(h('span', 'confirm-text', 'Delete this message?'));
    add('confirm-delete', 'Delete');
    add('cancel-delete', 'Cancel');
  } else if (seqOf(li) !== null && !li.dataset.deleted && !editing) {
    add('reply', 'Reply', 'Reply with a quote');
    if (li.classList.contains('mine') && !li.dataset.changing) {
      add('edit', 'Edit', 'Edit your message');
      add('delete', 'Delete', 'Delete your message');
    }
  }
  bar.hidden = bar.childElementCount === 0;
}

export const noHover = window.matchMedia('(hover: none)');

export function onMessageAction(event) {
  const button = event.target.closest('[data-action]');
  if (!button || !el.messages.contains(button)) {
    // Touch screens have no hover: a tap on a message shows its actions (and hides the others').
    const tapped = event.target.closest('.msg');
    if (noHover.matches && tapped && !event.target.closest('.edit-form')) {
      const open = !tapped.classList.contains('actions-open');
      for (const li of el.messages.querySelectorAll('.msg.actions-open')) li.classList.remove('actions-open');
      tapped.classList.toggle('actions-open', open);
    }
    return;
  }
  const li = button.closest('.msg');
  if (!li) return;
  switch (button.dataset.action) {
    case 'reply': return startReply(li);
    case 'edit': return startEdit(li);
    case 'delete': return setActions(li, 'confirm-delete');
    case 'confirm-delete': return sendDelete(li);
    case 'cancel-delete': return setActions(li);
    case 'retry': return retryPending(li);
    case 'discard': return discardPending(li);
    case 'jump': return jumpTo(Number(button.dataset.parent));
    default: return undefined;
  }
}

// Messages of an earlier life of the room (before an epoch change) keep their place but
// their seqs now name other messages: they can no longer be answered or changed.
export function forgetRoomLife() {
  for (const li of state.bySeq.values()) {
    li.dataset.stale = '1';
    setActions(li);
  }
  state.bySeq.clear();
  state.changes.clear();
  state.changeBySeq.clear();
  cancelEdit();
  clearReply();
  state.reads.clear();
}

// ---------------------------------------------------------------- edit and delete
export function startEdit(li) {
  const seq = seqOf(li);
  const textNode = li.querySelector('.bubble > .text');
  if (seq === null || !textNode || !state.joined) return;
  cancelEdit();
  const form = h('form', 'edit-form');
  const input = h('textarea', 'edit-input');
  input.dataset.testid = 'edit-input';
  input.maxLength = 2000;
  input.rows = Math.min(6, textNode.textContent.split('\n').length);
  input.value = textNode.textContent;
  input.setAttribute('aria-label', 'Edit message');
  const save = h('button', 'edit-save', 'Save');
  save.type = 'submit';
  const cancel = h('button', 'edit-cancel', 'Cancel');
  cancel.type = 'button';
  const buttons = h('div', 'edit-buttons');
  buttons.append(h('span', 'edit-hint', 'Enter to save, Esc to cancel'), cancel, save);
  form.append(input, buttons);
  textNode.hidden = true;
  textNode.after(form);
  state.editing = { li, seq, form };
  setActions(li);
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    } else if (event.key === 'Escape') {
      event.preventDefault();
      event.stopPropagation();
      cancelEdit();
    }
  });
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    saveEdit();
  });
  cancel.addEventListener('click', cancelEdit);
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
}

export function closeEditor() {
  const ed = state.editing;
  if (!ed) return null;
  state.editing = null;
  ed.form.remove();
  const textNode = ed.li.querySelector('.bubble > .text');
  if (textNode) textNode.hidden = false;
  setActions(ed.li);
  return ed;
}

export function cancelEdit() {
  const ed = closeEditor();
  if (ed && ed.li.isConnected && document.activeElement === document.body) el.input.focus();
}

export function saveEdit() {
  const ed = state.editing;
  if (!ed) return;
  const textNode = ed.li.querySelector('.bubble > .text');
  const text = ed.form.querySelector('textarea').value;
  if (!textNode || text.trim() === '' || text === textNode.textContent) return cancelEdit();
  const ref = trackChange(conn.chat.edit(state.room, ed.seq, text), { kind: 'edit', seq: ed.seq, before: textNode.textContent });
  state.changeBySeq.set(ed.seq, ref);
  closeEditor();
  // Shown at once; `message_edited` confirms it, an error with this ref puts it back.
  textNode.textContent = text;
  ed.li.dataset.changing = '1';
  setMsgStatus(ed.li, 'saving...', 'sending');
  setActions(ed.li);
  refreshQuotes(ed.seq);
  return undefined;
}

export function sendDelete(li) {
  const seq = seqOf(li);
  if (seq === null) return;
  const ref = trackChange(conn.chat.delete(state.room, seq), { kind: 'delete', seq });
  state.changeBySeq.set(seq, ref);
  li.dataset.changing = '1';
  setMsgStatus(li, 'deleting...', 'sending');
  setActions(li);
}

// The library sends the change (again after a reconnect, until the relay answers); its event
// confirms it (onEdited, onDeleted), a refusal puts the message back as the relay has it.
function trackChange(promise, change) {
  const ref = 'change-' + ++state.changeCounter;
  state.changes.set(ref, change);
  promise.catch((err) => {
    if (!state.changes.has(ref)) return; // settled, or the room is no longer shown
    revertChange(ref);
    if (err.code !== 'left') showBanner(err.code || 'error', err.message || '');
  });
  return ref;
}

// An error answered one of my edits or deletes: the message shows what the relay has.
export function revertChange(ref) {
  const change = state.changes.get(ref);
  if (!change) return;
  state.changes.delete(ref);
  if (state.changeBySeq.get(change.seq) === ref) state.changeBySeq.delete(change.seq);
  const li = state.bySeq.get(change.seq);
  if (!li) return;
  delete li.dataset.changing;
  setMsgStatus(li, '');
  const textNode = li.querySelector('.bubble > .text');
  if (change.kind === 'edit' && textNode) {
    textNode.textContent = change.before;
    refreshQuotes(change.seq);
  }
  setActions(li);
}

// A change of mine the relay carried out (the event is the confirmation).
export function settleChange(seq) {
  const ref = state.changeBySeq.get(seq);
  if (ref === undefined) return;
  state.changeBySeq.delete(seq);
  state.changes.delete(ref);
}

export function onEdited(msg) {
  if (!isCurrentRoom(msg)) return;
  const li = state.bySeq.get(msg.target);
  // A delete is final: an older edit replayed from history does not bring the text back.
  if (!li || li.dataset.deleted || typeof msg.text !== 'string') return;
  settleChange(msg.target);
  delete li.dataset.changing;
  setMsgStatus(li, '');
  const textNode = li.querySelector('.bubble > .text');
  if (textNode) textNode.textContent = msg.text;
  markEdited(li, msg.editedAt);
  setActions(li);
  refreshQuotes(msg.target);
}

export function onDeleted(msg) {
  if (!isCurrentRoom(msg)) return;
  const li = state.bySeq.get(msg.target);
  if (!li) return;
  settleChange(msg.target);
  delete li.dataset.changing;
  setMsgStatus(li, '');
  markDeleted(li);
  refreshQuotes(msg.target);
  if (state.replyTo === msg.target) renderReplyBar();
  renderSeenBy();
}

export function markEdited(li, editedAt) {
  li.dataset.edited = '1';
  const meta = li.querySelector('.meta');
  let mark = meta.querySelector('.edited');
  if (!mark) {
    mark = h('span', 'edited', '(edited)');
    mark.dataset.testid = 'edited';
    meta.insertBefore(mark, meta.querySelector('.msg-status'));
  }
  if (Number.isFinite(editedAt)) mark.title = 'edited ' + fullFormat.format(new Date(editedAt));
}

// "message deleted" and nothing of what it said: no text, no quote, no actions.
export function markDeleted(li) {
  if (state.editing && state.editing.li === li) closeEditor();
  li.dataset.deleted = '1';
  li.classList.add('deleted');
  const bubble = li.querySelector('.bubble');
  for (const node of bubble.querySelectorAll(':scope > .text, :scope > .quote, .edited')) node.remove();
  if (!bubble.querySelector('.tombstone')) {
    const note = h('div', 'tombstone', 'message deleted');
    note.dataset.testid = 'tombstone';
    bubble.append(note);
  }
  setActions(li);
}
