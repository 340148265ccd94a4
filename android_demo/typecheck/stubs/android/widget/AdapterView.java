package android.widget;
public abstract class AdapterView<T extends Adapter> extends android.view.View {
    public interface OnItemSelectedListener {
        void onItemSelected(AdapterView<?> parent, android.view.View view, int position, long id);
        void onNothingSelected(AdapterView<?> parent);
    }
    public final OnItemSelectedListener getOnItemSelectedListener() { return null; }
    public void setOnItemSelectedListener(OnItemSelectedListener listener) {}
    public abstract T getAdapter();
    public abstract void setAdapter(T adapter);
}
